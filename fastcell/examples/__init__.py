"""Small runnable examples (``python -m fastcell.examples.acquisition_callback``)."""
