from tilecolor.cli import entry

entry()
