from fhir_gateway.cli import main

raise SystemExit(main())
