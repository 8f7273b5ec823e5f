"""One module per `reppo` subcommand, each with `configure_parser(parser)` and
`run(args) -> int`. The command line (`reppo.cli`) builds its parser from them and maps their
errors to exit statuses (`reppo.errors`); they import nothing heavy at the top, so that `reppo
--help` and the framework-free commands stay fast, and nothing here imports `reppo.cli`.
"""
