"""MkDocs hooks of the documentation site (registered under ``hooks:`` in mkdocs.yml).

- ``on_page_markdown`` replaces each ``<!-- reader-rag-help: COMMAND -->`` marker with the
  output of ``reader-rag COMMAND --help``, so the command line reference always matches the
  parser. An empty COMMAND gives the top-level help. On a page with markers, a command of the
  parser without its own marker logs a warning, which fails ``mkdocs build --strict``.
- ``on_page_content`` drops the Sphinx roles (``:class:``, ``:meth:``) and the ``::`` of
  reStructuredText literal blocks that some docstrings use, which the Google-style parser of
  mkdocstrings leaves as text.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
from collections.abc import Iterator

logger = logging.getLogger("mkdocs.hooks.reader_rag")

HELP_MARKER = re.compile(r"<!--\s*reader-rag-help:\s*(?P<command>[a-z0-9 -]*?)\s*-->")
# Line width of the rendered help text, so that the page does not depend on the terminal.
HELP_COLUMNS = "100"
SPHINX_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):(?=<code>)")
LITERAL_BLOCK_LEAD = re.compile(r"<p>([A-Z][a-z]+)::</p>")


def on_page_markdown(markdown, page, config, files):
    commands = [match.group("command") for match in HELP_MARKER.finditer(markdown)]
    if not commands:
        return markdown
    for missing in sorted(set(parser_commands()) - set(commands)):
        logger.warning(
            "%s has no help marker for `reader-rag %s`. Add <!-- reader-rag-help: %s --> with "
            "a description of the command",
            page.file.src_path, missing, missing,
        )
    return HELP_MARKER.sub(lambda match: help_block(match.group("command")), markdown)


def on_page_content(html, page, config, files):
    html = SPHINX_ROLE.sub("", html)
    return LITERAL_BLOCK_LEAD.sub(r"<p>\1:</p>", html)


def help_block(command: str) -> str:
    """Return ``reader-rag COMMAND --help`` as a fenced text block."""
    from reader_rag.cli import main

    output = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
            main([*command.split(), "--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    text = output.getvalue().rstrip()
    if not text.startswith("usage:"):
        logger.warning("`reader-rag %s --help` printed no usage text: %r", command, text[:200])
    return f"```text\n{text}\n```"


def parser_commands() -> list[str]:
    """Return every command that takes no further subcommand, such as ``"ask"`` or
    ``"index build"``."""
    # NOTE: argparse has no public API that lists subcommands, so this uses the private
    # reader_rag.cli._build_parser and argparse._SubParsersAction. A rename there fails the build.
    from reader_rag.cli import _build_parser

    return [" ".join(names) for names in _walk(_build_parser(), ())]


def _walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                nested = list(_walk(subparser, (*prefix, name)))
                yield from nested or [(*prefix, name)]
