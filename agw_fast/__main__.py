from agw_fast.cli import main

raise SystemExit(main())
