from subbench.cli import main

main()
