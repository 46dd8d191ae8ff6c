from fastcell.cli import main

raise SystemExit(main())
