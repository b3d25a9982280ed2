"""``edgefuse``: build, train, quantize, export and gate attention-fusion CNNs for edge CPUs and phones.

The app and its entry point; the commands are in :mod:`edgefuse.cli.commands` (one module each), their
shared options in :mod:`edgefuse.cli.options`, what they print in :mod:`edgefuse.cli.render`. Commands import
the heavy libraries (torch, onnxruntime) inside their bodies so ``--help`` is instant.
Errors from the library become one line on stderr and an exit code: 0 success, 1 a gate failed,
2 bad input or usage. ``EDGEFUSE_DEBUG=1`` prints the full traceback instead.
"""

from __future__ import annotations

import sys
import typer

app = typer.Typer(
    name="edgefuse",
    help=(
        "Attention-fusion CNNs (SE, CBAM, non-local, dynamic, cross-modal, EfficientAttention) to int8 on "
        "phones and edge CPUs: train, quantize, export, validate, gate.\n\n"
        "Exit codes: 0 ok, 1 a validation gate failed, 2 bad input or usage. "
        "Set EDGEFUSE_DEBUG=1 for tracebacks."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register_commands() -> None:
    # The commands are declared in one place (edgefuse.cli.commands.COMMANDS); their modules import only typer.
    from importlib import import_module

    from edgefuse.cli.commands import COMMANDS

    for name, target in COMMANDS.items():
        module, function = target.split(":")
        app.command(name)(getattr(import_module(f"edgefuse.cli.commands.{module}"), function))


_register_commands()


class _Interrupted(BaseException):
    """A stop signal arrived; ``code`` is the conventional exit status (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map errors to one line and an exit code."""
    from edgefuse._memory import keep_freed_memory
    from edgefuse._quiet import debug_enabled

    debug = debug_enabled()
    console = argv is None  # the console script (or ``python -m``), not main(argv) in a caller's own process
    if console:
        keep_freed_memory()  # before torch allocates anything: PyTorch's large tensors reuse the heap
    import signal

    def _stop(signum, frame):
        # Ctrl-C and a CI runner's kill (SIGTERM) unwind like an exception, so every ``finally`` runs and
        # temporary files go. A BaseException, not KeyboardInterrupt: typer would swallow that silently.
        raise _Interrupted(128 + signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread (embedded use)
            pass
    try:
        _run(argv, debug)
    except SystemExit as e:
        if console and not debug:
            _exit_now(e.code)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_now(code) -> None:
    """End the process once the command is done, without the interpreter's teardown: after a 224x224
    export that is a full garbage collection over every object torch, the exporters and the programs left
    behind (1.7-2.0 s of a MobileNetV3-large export, measured with perf). Everything the command wrote is
    closed by then; the exit handlers still run (temporary folders, logging) and the streams are flushed."""
    import atexit
    import os

    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 -- a closed pipe must not change the exit status
                pass
        os._exit(status)


def _run(argv: list[str] | None, debug: bool) -> None:
    try:
        # Not standalone: click's usage errors (typer vendors click) reach us too, so they get the same one
        # line as ours instead of click's four-line usage block.
        rc = app(args=argv, prog_name="edgefuse", standalone_mode=False)
    except typer.Abort:
        print("edgefuse: interrupted", file=sys.stderr)
        sys.exit(130)
    except (KeyboardInterrupt, _Interrupted) as e:
        print("edgefuse: interrupted", file=sys.stderr)
        sys.exit(e.code if isinstance(e, _Interrupted) else 130)
    except typer.TyperException as e:  # click's UsageError / BadParameter / MissingParameter, exit code 2
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "edgefuse"
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"edgefuse: error: {message.strip().splitlines()[0]} (see `{where} --help`)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except Exception as e:  # noqa: BLE001 -- the one place that turns errors into exit codes
        from edgefuse.errors import EdgefuseError

        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(e, EdgefuseError):
            print(f"edgefuse: error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        print(
            f"edgefuse: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(rerun with EDGEFUSE_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        sys.exit(3)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
