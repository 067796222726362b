from o2o.cli import main

main()
