"""The README's commands name scripts, flags and config files that exist.

A researcher copies these commands; a renamed flag or config would fail only when run.
"""

from __future__ import annotations

import pathlib
import re

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
README = REPO_ROOT / 'README.md'

# `python train.py ...` or `python -m evaluation.bootstrap ...`, up to the end of the
# command (a backtick, a shell operator, a comment or the end of the line).
_COMMAND = re.compile(r'\bpython3? (?:-m ([\w.]+)|([\w/]+\.py))([^`\n&|;#]*)')
_FLAG = re.compile(r'(?<![\w-])--(\w+)')
_DEFINE = re.compile(r"flags\.DEFINE_\w+\(\s*'(\w+)'")
# Flags that absl itself defines for every entry point.
_ABSL_FLAGS = {'helpshort', 'helpfull', 'help', 'verbosity', 'v', 'logtostderr',
               'alsologtostderr', 'log_dir', 'flagfile'}


def _commands() -> list[tuple[str, str]]:
  """(script path, arguments) of every `python` command in the README."""
  text = re.sub(r'\\\n\s*', ' ', README.read_text())  # join continued lines
  commands = []
  for module, script, args in _COMMAND.findall(text):
    if module in ('venv', 'pip', 'pytest'):
      continue
    path = script or module.replace('.', '/') + '.py'
    commands.append((path, args))
  return commands


def _gin_args(args: str) -> tuple[list[str], list[str]]:
  """(gin files, gin bindings) of a command; `configs/grids/<grid>.gin` (any grid) left out."""
  files = [REPO_ROOT / f for f in re.findall(r'--gin_file=([^\s\'"]+)', args) if '<' not in f]
  bindings = [a or b or c for a, b, c in re.findall(
      r"""--gin_bindings=(?:'([^']*)'|"([^"]*)"|(\S+))""", args)]
  return [str(f) for f in files], bindings


def test_readme_has_the_commands_it_documents():
  scripts = {path for path, _ in _commands()}
  assert {'train.py', 'evaluate.py', 'tune.py', 'results/make_table.py'} <= scripts


@pytest.mark.parametrize('path, args', _commands(), ids=lambda v: v[:60])
def test_readme_command_names_a_script_its_flags_and_configs(path, args):
  script = REPO_ROOT / path
  assert script.is_file(), f'README runs {path}, which does not exist'
  source = script.read_text()
  defined = set(_DEFINE.findall(source)) | _ABSL_FLAGS
  if not defined - _ABSL_FLAGS:  # no absl flags: it reads sys.argv itself, e.g. '--check'
    defined = set(re.findall(r"'--(\w+)", source))
  unknown = sorted(set(_FLAG.findall(args)) - defined)
  assert not unknown, f'README passes {path} flags it does not define: {unknown}'
  for config in _gin_args(args)[0]:
    assert pathlib.Path(config).is_file(), f'README names {config}, which does not exist'


@pytest.mark.parametrize('path, args', [(p, a) for p, a in _commands() if '--gin_' in a],
                         ids=lambda v: v[:60])
def test_readme_command_gin_config_parses(path, args, monkeypatch):
  from utils import entry  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(REPO_ROOT)  # gin resolves `include` from the current folder
  files, bindings = _gin_args(args)
  entry.parse_gin(files, bindings)  # raises ConfigError naming a misspelt binding
