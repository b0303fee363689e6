"""The command-line reference page, written from the Click commands themselves (every
command, argument and option with its help) plus the contract every command keeps: exit
codes and `--json` statuses. `edgefreeze reference DIR` writes it beside the pipeline
reference; a test holds docs/ to it, and another checks that every status the code can
print is in STATUSES.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click

PAGE = "cli.md"

EXIT_CODES: list[tuple[str, str]] = [
    (
        "0",
        "done: shipped (`build`, `retrain`, `sweep`), passed (`verify-target`), written "
        "(`init`), ok (the rest)",
    ),
    (
        "1",
        "a check said no: the gate refused (nothing at the output; `OUTPUT.rejected/` holds "
        "`report.md`, `report.html` and `manifest.json` naming each failed rule and by how "
        "much); `verify-target`: the target breaks the gate's rules; `inspect`: the "
        "gradient-flow check failed; `cache verify`: corrupt entries were found (and dropped); "
        "`verify`: the bundle's self-check fails on this machine",
    ),
    (
        "2",
        "bad input or configuration: one line on stderr naming the file, line and key. Also: "
        "a usage error, an output that exists, a second build aimed at an output another "
        "build holds (naming its pid), a bundle that fails its checks on the device, and a "
        "build command on an install without the build extra (`pip install "
        "'edgefreeze[build]'`)",
    ),
    (
        "3",
        "anything else, in one line (`EDGEFREEZE_TRACEBACK=1` shows the traceback); a full "
        "disk at the output is this, named as such",
    ),
    (
        "130",
        "interrupted (SIGINT, Ctrl-C): the staging folder and the lock are gone, nothing is "
        "at the output",
    ),
    ("143", "terminated (SIGTERM, a cancelled CI job): as 130"),
]

# status, commands, exit code, what else the object holds
STATUSES: list[tuple[str, str, str, str]] = [
    (
        "shipped",
        "`build`, `retrain`, `sweep`",
        "0",
        "`bundle`, `metrics`, `gate`, `cache`, `sizes`, `timings_s`, "
        "`trainable_parameters`; `sweep` adds its search (`sweep`); with `--sign-key`, "
        "`signature` as `sign` gives it",
    ),
    (
        "refused",
        "`build`, `retrain`, `sweep`",
        "1",
        "`report` (the `OUTPUT.rejected/` folder) and the same figures as `shipped`",
    ),
    (
        "trained",
        "`build`, `retrain` under torchrun",
        "0",
        "a process other than rank 0: it trained its share, rank 0 ships. Under torchrun "
        "each process prints its own object",
    ),
    (
        "passed",
        "`verify-target`, `verify`",
        "0",
        "`verify-target`: the check as the manifest's `targets` records it; `verify`: "
        "`key_sha256`, `files`, `self_check` per form",
    ),
    (
        "written",
        "`init`, `slim`",
        "0",
        "`init`: `pipeline`, `task`, `format`, `rows`, `model`, `columns`, `labels`, "
        "`max_length`; `slim`: `bundle`, `forms`, `bytes`, `dropped`",
    ),
    (
        "signed",
        "`sign`",
        "0",
        "`bundle`, `signature` (`file`, `key_sha256`: the public key's fingerprint)",
    ),
    (
        "installed",
        "`device install`, `device update`",
        "0",
        "`current`, `previous`, `versions` (slot: version), `cleaned`, `refused` (manifest "
        "sha256: why `update` will not install it), and `verify`'s fields; `update` adds "
        "`name`, `release`, `serving_release`, `fetched` (files downloaded), `fetched_bytes`, "
        "`release_bytes`",
    ),
    (
        "up-to-date",
        "`device update`",
        "0",
        "nothing newer to install: `note` says why (the newest serves, or was refused here), "
        "and `status`'s fields",
    ),
    (
        "released",
        "`repo add`",
        "0",
        "`name`, `version`, `files`, `bytes`, `bytes_new_since_previous` (what a device "
        "serving the previous release fetches)",
    ),
    (
        "ok",
        "`inspect`, `cache ...`, `bench`, `diff`, `device ...`, `repo init`, `repo refresh`",
        "0",
        "the command's figures",
    ),
    (
        "error",
        "every command",
        "1, 2, 3",
        "`message`, and what the failure knows (such as the failed check)",
    ),
    ("interrupted", "every command", "130", ""),
    ("terminated", "every command", "143", ""),
]


def cli_markdown(group: click.Group) -> str:
    """The reference page for `group` (the `edgefreeze` command)."""
    root = click.Context(group, info_name="edgefreeze")
    lines = [
        "# Command line reference",
        "",
        "<!-- Written by `edgefreeze reference docs/`; a test fails when this page differs. -->",
        "",
        "Progress goes to stderr and `--quiet` silences it (warnings, which change what a "
        "build did, still show). With `--json`, stdout holds exactly one JSON object per "
        "process, whatever happens: `exit_code`, `status` and the status's fields. "
        "`predict --json` is the exception: one JSON line per input (blank lines of `--file` "
        "are skipped), or the one error object.",
        "",
        "## Exit codes",
        "",
        "| code | meaning |",
        "| --- | --- |",
        *(f"| {code} | {meaning} |" for code, meaning in EXIT_CODES),
        "",
        "## `--json` statuses",
        "",
        "| status | commands | exit code | beside `exit_code` and `status` |",
        "| --- | --- | --- | --- |",
        *(f"| `{s}` | {commands} | {code} | {fields} |" for s, commands, code, fields in STATUSES),
        "",
        "## Commands",
    ]
    for path, command, context in _commands(group, root):
        lines += ["", f"### `{path}`", "", *_command_lines(command, context)]
    return "\n".join(lines) + "\n"


def _commands(
    group: click.Group, parent: click.Context
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command under `group`, in the order `--help` lists them, subcommands after
    their group."""
    for name in group.list_commands(parent):
        command = group.get_command(parent, name)
        if command is None or command.hidden:
            continue
        context = click.Context(command, info_name=name, parent=parent)
        if isinstance(command, click.Group):
            yield from _commands(command, context)
        else:
            yield context.command_path, command, context


def _command_lines(command: click.Command, context: click.Context) -> list[str]:
    usage = " ".join([context.command_path, *command.collect_usage_pieces(context)])
    lines = ["```", usage, "```", "", *_paragraphs(command.help or "")]
    rows = [_row(param, context) for param in command.params]
    if rows:
        lines += ["", "| argument or option | value | meaning |", "| --- | --- | --- |", *rows]
    return lines


def _paragraphs(text: str) -> list[str]:
    """Click help text (a docstring) as Markdown paragraphs, one line each."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out: list[str] = []
    for paragraph in paragraphs:
        out += [" ".join(line.strip() for line in paragraph.splitlines()), ""]
    return out[:-1]


def _value(param: click.Option, context: click.Context) -> str:
    """What an option takes: its choices, its range, or Click's name for its type."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return ", ".join(f"`{choice}`" for choice in kind.choices)
    if isinstance(kind, click.IntRange | click.FloatRange):
        number = "integer" if isinstance(kind, click.IntRange) else "number"
        low = "" if kind.min is None else f"{kind.min} {'<' if kind.min_open else '≤'} "
        high = "" if kind.max is None else f" {'<' if kind.max_open else '≤'} {kind.max}"
        return f"{number} `{low}x{high}`"
    return f"`{param.make_metavar(context)}`"


def _row(param: click.Parameter, context: click.Context) -> str:
    if isinstance(param, click.Option):
        names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
        value = "" if param.is_flag else _value(param, context)
        default = param.get_default(context)
        if isinstance(default, (str, int, float)) and not param.is_flag:
            value += f" (default `{default}`)"
        if param.multiple:
            value += ", repeatable"
        meaning = param.help or ""
    else:
        names = f"`{param.make_metavar(context)}`"
        value = "repeatable" if param.nargs == -1 else ""
        meaning = "required" if param.required else "optional"
    escaped = meaning.replace("|", "\\|")  # a table cell ends at a bare |
    return f"| {names} | {value} | {escaped} |"
