"""The ``layout2img`` subcommands: each module's ``add_parser(sub)`` adds one, its ``run(args)`` runs it.

Only argparse is imported when the parser is built; a handler imports the library when it runs,
so ``layout2img --help`` stays fast. :mod:`layout2img.cli` assembles them.
"""
