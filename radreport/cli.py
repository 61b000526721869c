"""The `radreport` command line: one Typer app whose subcommands cover every job.

Each package owns its commands in `<package>/cli.py` (a `register(app)` function); this module
only gathers them, so `radreport --help` stays fast (heavy libraries load inside the commands).
"""

from __future__ import annotations

import importlib

import typer

from radreport.allocator import reexec_with_jemalloc

app = typer.Typer(
    name="radreport",
    help=(
        "Chest X-ray report generation with PaliGemma 2: "
        "synth, finetune, evaluate, generate, serve."
    ),
    no_args_is_help=True,
    add_completion=False,
)

# Layer order: the commands of lower layers first.
_PACKAGES = ("radiology", "modeling", "radreport.generate", "evaluation", "finetune", "service",
             "radreport.demo")


def _register_all() -> None:
    for package in _PACKAGES:
        module_name = package if package.startswith("radreport.") else f"{package}.cli"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # A package without commands (yet) is fine; a broken import inside one is not.
            if error.name in (module_name, package):
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Entry point of the `radreport` script and `python -m radreport`: on Linux with jemalloc
    installed, first re-executes itself with it preloaded (see `radreport.allocator`)."""
    reexec_with_jemalloc()
    app()
