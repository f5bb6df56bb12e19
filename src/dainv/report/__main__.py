from dainv.report import main

raise SystemExit(main())
