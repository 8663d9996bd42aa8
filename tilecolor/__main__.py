from tilecolor.cli import main

main()
