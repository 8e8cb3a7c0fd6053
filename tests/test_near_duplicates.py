"""input_pipeline.near_duplicates: the same picture saved as a different file."""

import shutil
import subprocess
import sys

import cv2
import pytest

from input_pipeline import idrid
from input_pipeline import near_duplicates
from tests.conftest import REPO_ROOT


def _run(data_dir, *flags):
  return subprocess.run([sys.executable, '-m', 'input_pipeline.near_duplicates',
                         f'--data_dir={data_dir}', *flags], cwd=REPO_ROOT,
                        capture_output=True, text=True)


@pytest.fixture
def copy_with_twin(synthetic_dir, tmp_path):
  """The synthetic set with train IDRiD_020 replaced by IDRiD_005, darker and recompressed."""
  data = tmp_path / 'idrid'
  shutil.copytree(synthetic_dir, data)
  records, _ = idrid.load_records(str(data))
  by_name = {r.name: r.path for r in records if r.split == 'train'}
  image = cv2.imread(by_name['IDRiD_005'])
  cv2.imwrite(by_name['IDRiD_020'], cv2.convertScaleAbs(image, alpha=0.7, beta=5),
              [cv2.IMWRITE_JPEG_QUALITY, 70])
  return data


def test_a_darker_recompressed_copy_is_found_and_nothing_else(copy_with_twin):
  proc = _run(copy_with_twin)
  assert proc.returncode == 0, proc.stderr
  pairs = [l for l in proc.stdout.splitlines() if l.startswith('  ')]
  assert len(pairs) == 1, proc.stdout
  assert 'train IDRiD_005' in pairs[0] and 'train IDRiD_020' in pairs[0]
  assert 'different files' in pairs[0]
  assert proc.stdout.startswith('48 photographs; pairs with vessel-pattern correlation '
                                '>= 0.8: 1\n')


def test_a_byte_identical_copy_scores_one(synthetic_dir, tmp_path):
  paths = sorted(str(p) for p in synthetic_dir.rglob('*.jpg'))[:6]
  copy = tmp_path / 'copy.jpg'
  shutil.copy(paths[0], copy)
  pairs = near_duplicates.similar_pairs(paths + [str(copy)])
  assert [(i, j) for _, i, j in pairs] == [(0, 6)] and pairs[0][0] == pytest.approx(1.0)


def test_bad_input_is_a_one_line_error_naming_it(copy_with_twin, tmp_path):
  proc = _run(tmp_path / 'missing')
  assert proc.returncode == 1 and proc.stderr.strip().count('\n') == 0
  assert 'missing' in proc.stderr
  broken = next(copy_with_twin.rglob('IDRiD_007.jpg'))
  broken.write_bytes(b'not a jpeg')
  proc = _run(copy_with_twin)
  assert proc.returncode == 1 and proc.stderr.strip().count('\n') == 0
  assert 'IDRiD_007.jpg' in proc.stderr and 'not a decodable image' in proc.stderr
  truncated = next(copy_with_twin.rglob('IDRiD_008.jpg'))
  broken.unlink()  # only IDRiD_008 is bad now
  truncated.write_bytes(truncated.read_bytes()[:-2000])
  proc = _run(copy_with_twin)
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr
  assert 'IDRiD_008.jpg' in errors[0] and 'truncated JPEG' in errors[0]
  # The label row of the removed IDRiD_007 is left out with a warning, not silently.
  assert 'have no photograph' in proc.stderr and 'IDRiD_007' in proc.stderr
  proc = _run(copy_with_twin, '--threshold=1.5')
  assert proc.returncode != 0 and '--threshold' in proc.stderr


def test_real_idrid_has_one_copy_that_is_not_byte_identical(idrid_800):
  proc = _run(idrid_800)
  assert proc.returncode == 0, proc.stderr
  pairs = [l for l in proc.stdout.splitlines() if l.startswith('  ')]
  assert sum('byte-identical' in l for l in pairs) == 6  # the dataset README's six pairs
  different = [l for l in pairs if 'different files' in l]
  assert len(different) == 1
  assert 'IDRiD_013 (grade 3)' in different[0] and 'IDRiD_397 (grade 2)' in different[0]
