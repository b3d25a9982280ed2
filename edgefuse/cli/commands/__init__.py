"""One module per command; :data:`COMMANDS` declares them (name -> ``module:function``) for ``cli.main``.

Each module imports only typer and the shared options at the top, and the library inside the command, so
``edgefuse --help`` stays instant. A new command is one module here and one line below.
"""

COMMANDS = {
    "list": "listing:list_cmd",
    "train": "train:train",
    "inspect": "inspect:inspect",
    "export": "export:export",
    "validate": "validate:validate",
    "analyze": "analyze:analyze",
    "ablate": "ablate:ablate",
    "verify": "verify:verify",
    "doctor": "doctor:doctor",
    "verify-arm": "verify_arm:verify_arm",
}
