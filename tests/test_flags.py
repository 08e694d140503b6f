"""Every numeric flag of every script is bounded where it is parsed: 0, -1, 1e9, nan, inf and text are each either a
value the flag means (0 where it counts something that may be none) or one line naming the flag, exit status 2.

The cases are generated from the parsers themselves, so a flag added later is covered without a new test.
"""

from __future__ import annotations

import argparse
import importlib

import pytest

SCRIPTS = ["train_sod", "train_vsod", "predict", "serve", "generate_salmaps_sod", "generate_salmaps_vsod",
           "speed_sod", "speed_vsod", "export_onnx", "convert", "demo", "Evaluation.__main__", "data.synthetic"]
HOSTILE = ["-1", "1e9", "1000000000", "99999999999999999999", "-1000000000", "nan", "inf", "-inf", "text", ""]
# Flags whose meaning includes negative values (branch logits), and a billion (seeds up to 2^32 - 1; bytes up to
# 1 GiB).
SIGNED, LARGE = {"--scales"}, {"--seed", "--max-bytes"}


def numeric_flags(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(subcommand words, action) for every option of ``parser`` (and its subcommands) that converts its value."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from numeric_flags(sub, (*prefix, name))
        elif action.option_strings and action.type not in (None, str) and not action.choices:
            yield prefix, action


CASES = [(script, words, action.option_strings[-1]) for script in SCRIPTS
         for words, action in numeric_flags(importlib.import_module(script).build_parser())]


def test_every_script_has_numeric_flags_covered() -> None:
    assert {script for script, _, _ in CASES} == set(SCRIPTS) and len(CASES) > 60, len(CASES)


def optional_everything(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with no argument required, so that one flag can be parsed alone."""
    for action in parser._actions:
        action.required = False
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                optional_everything(sub)
        elif not action.option_strings:
            action.nargs = "*" if action.nargs in ("+", "*") else "?"
    return parser


@pytest.mark.parametrize(("script", "words", "flag"), CASES, ids=[f"{s}:{' '.join(w)}{f}" for s, w, f in CASES])
def test_a_numeric_flag_takes_what_it_means_and_names_itself_otherwise(script: str, words: tuple[str, ...],
                                                                        flag: str, capsys) -> None:
    parser = optional_everything(importlib.import_module(script).build_parser())
    action = dict((a.option_strings[-1], a) for _, a in numeric_flags(parser))[flag]
    named = f"argument {'/'.join(action.option_strings)}"
    for value in HOSTILE + ["0"]:
        try:
            parsed = parser.parse_known_args([*words, flag, value])[0]
        except SystemExit as exit_info:
            assert exit_info.code == 2, (flag, value)
            lines = [line for line in capsys.readouterr().err.splitlines()
                     if line.strip() and not line.startswith("usage") and not line.startswith(" ")]
            assert len(lines) == 1 and named in lines[0] and "Traceback" not in lines[0], (flag, value, lines)
            continue
        got = getattr(parsed, action.dest)
        if isinstance(got, list | tuple):
            if not got:  # an empty list: '' meaning none (--lr-steps '': no steps)
                assert value == "", (flag, value, got)
                continue
            got = got[0]
        meant = (value == "0" or flag in SIGNED and value == "-1"
                 or flag in LARGE and value in ("1e9", "1000000000"))
        assert meant and got == float(value), (flag, value, got)
