"""Every shell command written in README.md and docs/ runs, or is checked up to the point where it
needs what only its user has (a real dataset, ImageNet weight files, a GPU, gcloud / SLURM).

`COMMANDS` maps each command that `docs_commands.extract` finds (normalised) to its check, and
`test_every_documented_command_has_a_check` fails when a command is added, changed or removed in
the docs without the table following. The checks (kinds):
- run: the command runs for real, as a subprocess through bash, with placeholders and /tmp paths
  replaced by the test's own directories and tiny sizes appended (the `tiny` synthetic dataset, one
  training step); it exits 0 without a traceback and prints / writes what it should;
- until_data: it runs and stops where it needs the real thing: exit 2, one `ERROR:` line naming
  the missing dataset files / weight file (a flag or config error names something else), no
  traceback. Weight directories it is given are zero-filled ones made here;
- config: a training command too slow for a test (a real backbone at 448, a cluster) runs with
  --print_config: its flags, config file and arguments and every --config.FIELD override are valid;
- help: a command named in the prose (`python -m fgjax.evaluate`) or a long benchmark: the module
  exists, `--help` exits 0, and every --flag the docs give it is one of its flags;
- stub: a launch script run with stand-ins for the cluster tools (gcloud, sbatch, srun) that record
  how they are called: it gets as far as starting fgjax with the documented arguments;
- skip: pip installs and the like, with the reason; the versions they pin must be pyproject's.

The commands run once each (a command shared by two pages, once) in a small thread pool, a run's
prerequisites (the trained run an `evaluate` reads) first.
"""

import dataclasses
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from concurrent import futures

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

from fgjax import pretrained
from fgjax.data import datasets
from fgjax.models import backbones

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import docs_commands  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = docs_commands.ROOT
TIMEOUT_S = 600
TINY = (' --config.dataset.config=tiny --config.dataset.data_dir={data}'
        ' --config.dataset.num_threads=1 --config.train.num_epochs=0.05')
# Staged configs (activation_attention) ignore train.num_epochs: one step per epoch instead.
TINY_STAGED = (' --config.dataset.config=tiny --config.dataset.data_dir={data}'
               ' --config.dataset.num_threads=1 --config.train.global_batch_size=96')
BCNN_RUN = '/tmp/fgjax/bcnn'  # README's trained run: what evaluate, export, predict read
README_TRAIN = 'python -m fgjax.train --config=configs/synthetic_bcnn.py --workdir=/tmp/fgjax/bcnn'
DEMO_TRAIN = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e . && '
              'python -m fgjax.train --config=configs/demo.py --workdir=/tmp/fgjax_demo')
AA_SINGLE = ('python -m fgjax.train --config=configs/synthetic_activation_attention.py:single '
             '--workdir=/tmp/fgjax/aa1')
AA_CONTINUE2 = ('python -m fgjax.train --config=configs/synthetic_activation_attention.py:continue2'
                ' --config.init_from.path=/tmp/fgjax/aa1 --workdir=/tmp/fgjax/aa2')
PRE_D = ('python -m fgjax.train --config=configs/synthetic_pretrain_classifier.py:stream=d '
         '--workdir=/tmp/pre_d')
ENGB_TRAIN = 'python -m fgjax.train --config=configs/demo.py --workdir=/tmp/engB/demo/run'
A3M = 'python -m fgjax.train --config=configs/synthetic_a3m.py --workdir=W'
A3M_SEED1 = A3M + ' --config.train.num_epochs=4 [--config.seed=1]'
TOPK = ('--topk=5', '--topk=3')  # the tiny dataset has 4 classes; more than that is refused
FINAL = r'final evaluation: \{'
FOLDER_PREPARE = 'python -m fgjax.data.prepare image_folder --path=~/photos'
PIP_SETUP = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e . && '


@dataclasses.dataclass(frozen=True)
class Check:
  """How one documented command is checked (module docstring). `subs`: (text, replacement)
  pairs applied to the command first (a text is replaced where it is not part of a longer word),
  in the docs' terms (/tmp/... paths are then moved into the test's directory); `extra` is
  appended; `after`: commands (keys of COMMANDS) that must have run first; `expect`: a regex the
  output (run), the ERROR message (until_data) or the recorded tool calls (stub) must match;
  `creates`: paths (docs' terms) a run must leave; `prefix`: what the error line starts with."""
  kind: str
  subs: tuple = ()
  extra: str = ''
  after: tuple = ()
  expect: str = ''
  creates: tuple = ()
  prefix: str = 'ERROR: '
  reason: str = ''
  slow: bool = False


def run(expect='', subs=(), extra='', after=(), creates=(), slow=False):
  return Check('run', tuple(subs), extra, tuple(after), expect, tuple(creates), slow=slow)


def train(subs=(), extra=TINY, after=(), slow=True):
  """A training command with tiny sizes appended: it ends with its final evaluation. A method's
  training step takes 10-30 s to compile: `slow` (README's B-CNN runs are not, so that the
  commands reading them are quick to run alone)."""
  return Check('run', tuple(subs), extra, tuple(after), FINAL, slow=slow)


def until_data(expect, subs=(), prefix='ERROR: '):
  return Check('until_data', tuple(subs), expect=expect, prefix=prefix)


def config(subs=()):
  return Check('config', tuple(subs), extra=' --print_config')


HELP = Check('help')


def stub(expect, subs=()):
  return Check('stub', tuple(subs), expect=expect)


def skip(reason):
  return Check('skip', reason=reason)


PIP = skip('installs packages (pip); the versions it pins are checked against pyproject.toml')

COMMANDS = {
    # ---- README.md
    DEMO_TRAIN: train(subs=[(PIP_SETUP, '')], slow=False),
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
    'python -m pytest -q': skip('the whole test suite, which contains this test: CI runs the '
                                'command verbatim (tests/test_readme.py)'),
    README_TRAIN: train(slow=False),
    'python -m fgjax.train --config=configs/demo.py --workdir=/tmp/fgjax/profiled '
    '--config.profile_steps=20,5': run(
        r'profile: trace written to', subs=[('profile_steps=20,5', 'profile_steps=1,1')],
        extra=TINY, creates=['/tmp/fgjax/profiled/profile'], slow=True),
    'python -m fgjax.evaluate --workdir=/tmp/fgjax/bcnn [--split=test] [--noplots] [--svm]': run(
        r'"svm_top1"', after=[README_TRAIN]),
    'python -m fgjax.export --workdir=/tmp/fgjax/bcnn --split=test --out=/tmp/bcnn_test.npz': run(
        after=[README_TRAIN], creates=['/tmp/bcnn_test.npz']),
    # ---- README.md: search a gallery
    'python -m fgjax.search --workdir=DIR --gallery=FOLDER|EXPORT.npz QUERY_IMAGE... [--topk=10] '
    '[--grid=OUT.png] [--distance=euclidean|cosine] [--rerank]': run(
        r'"rank": 1, "path": ', subs=[('DIR', BCNN_RUN), ('FOLDER|EXPORT.npz', '/tmp/photos/'),
                                      ('QUERY_IMAGE...', '/tmp/photos/a.png'),
                                      ('OUT.png', '/tmp/search_synopsis.png')],
        after=[README_TRAIN], creates=['/tmp/search_synopsis.png']),
    'python -m fgjax.search --workdir=/tmp/fgjax/bcnn --gallery=gallery/ query.jpg [--topk=10] '
    '[--grid=/tmp/search.png]': run(
        r'"rank": 1, "path": ', subs=[('gallery/', '/tmp/photos/'),
                                      ('query.jpg', '/tmp/photos/sub/b.jpg')],
        after=[README_TRAIN], creates=['/tmp/search.png']),
    'python -m fgjax.search --workdir=/tmp/fgjax/bcnn --gallery=/tmp/bcnn_test.npz query.jpg '
    '--rerank': run(
        r'"rank": 1, "id": \d+', subs=[('query.jpg', '/tmp/photos/a.png')],
        after=['python -m fgjax.export --workdir=/tmp/fgjax/bcnn --split=test '
               '--out=/tmp/bcnn_test.npz']),
    'python -m fgjax.export_model --workdir=/tmp/fgjax/bcnn --format=stablehlo '
    '--out=/tmp/bcnn.stablehlo': run(after=[README_TRAIN], creates=['/tmp/bcnn.stablehlo',
                                                                     '/tmp/bcnn.stablehlo.json']),
    'python -m fgjax.predict --model=/tmp/bcnn.stablehlo photos/': run(
        r'"topk"', subs=[('photos/', '/tmp/photos/')],
        after=['python -m fgjax.export_model --workdir=/tmp/fgjax/bcnn --format=stablehlo '
               '--out=/tmp/bcnn.stablehlo']),
    'python -m fgjax.export_model --workdir=DIR --format=stablehlo --out=PATH [--batch=N]': run(
        subs=[('DIR', BCNN_RUN), ('PATH', '/tmp/synopsis.stablehlo'), ('N', '2')],
        after=[README_TRAIN], creates=['/tmp/synopsis.stablehlo.json']),
    'python -m fgjax.predict --model=PATH IMAGE_OR_FOLDER...': run(
        r'"topk"', subs=[('PATH', '/tmp/synopsis.stablehlo'),
                         ('IMAGE_OR_FOLDER...', '/tmp/photos/a.png')],
        after=['python -m fgjax.export_model --workdir=DIR --format=stablehlo --out=PATH '
               '[--batch=N]']),
    'python -m fgjax.predict --workdir=/tmp/fgjax/bcnn photos/ [--topk=5] '
    '[--overlays=/tmp/overlays]': run(
        r'"topk"', subs=[('photos/', '/tmp/photos/'), TOPK], after=[README_TRAIN],
        creates=['/tmp/overlays/photos__a.png.png']),
    # Two seeds of one config (runs no other command evaluates again, e.g. with --svm: average
    # refuses runs whose metrics differ).
    'python -m fgjax.average DIR1 DIR2 ...': run(
        r'top1', subs=[('DIR1', '/tmp/a3m'), ('DIR2', '/tmp/a3m_seed1')],
        after=[A3M, A3M_SEED1], slow=True),
    'python -m fgjax.pretrained convert --arch resnet50 --src resnet50-11ad3fa6.pth '
    '--out ~/weights/resnet50': until_data(r'resnet50-11ad3fa6\.pth.* does not exist'),
    'python -m fgjax.pretrained convert --arch vgg16 --src vgg16-397923af.pth '
    '--out ~/weights/vgg16': until_data(r'vgg16-397923af\.pth.* does not exist'),
    'python -m fgjax.pretrained convert --arch vggm --src imagenet-vgg-m.mat '
    '--out ~/weights/vggm': until_data(r'imagenet-vgg-m\.mat.* does not exist'),
    'python -m fgjax.train --config=configs/synthetic_bcnn.py --workdir=/tmp/bcnn_r50 '
    '--config.model.backbone_a=resnet50 --config.model.layer_a=layer4 '
    '--config.model.backbone_a_pretrained=~/weights/resnet50 '
    '--config.dataset.image_size=448': config(),
    'python -m benchmarks.pretrain --out=/tmp/fgvc_weights': HELP,
    'python -m benchmarks.fgvc_oracles --workdir=/tmp/fgvc_oracles --weights=/tmp/fgvc_weights':
        HELP,
    'python -m benchmarks.methods --workdir=/tmp/fgvc_methods --weights=/tmp/fgvc_weights '
    '--seeds 0,1,2': HELP,
    'python -m fgjax.data.prepare cub2011 --manual_dir=~/downloads/cub': until_data(
        r'CUB_200_2011\.tgz'),
    'python -m fgjax.train --config=configs/cub_bcnn.py --workdir=/tmp/cub_bcnn '
    '--config.dataset.manual_dir=~/downloads/cub --config.model.backbone_a_pretrained=~/weights/'
    'vgg16 --config.model.backbone_b_pretrained=~/weights/vggm': until_data(
        r"(?s)cub2011.*CUB_200_2011\.tgz"),
    'launch/local_multiprocess.sh 2 4 python -m fgjax.train --config=configs/demo.py '
    '--workdir=/tmp/mp': config(),
    'launch/tpu_pod.sh my-v4-32 us-central2-b gs://my-bucket configs/cub_bcnn.py cub_bcnn '
    '--config.model.backbone_a_pretrained=/home/$USER/bucket/weights/vgg16 '
    '--config.model.backbone_b_pretrained=/home/$USER/bucket/weights/vggm': stub(
        r'(?s)gcloud compute tpus tpu-vm scp --zone us-central2-b --worker=all --recurse .*'
        r'gcloud compute tpus tpu-vm ssh my-v4-32 .*python -m fgjax\.train '
        r'--config=configs/cub_bcnn\.py\s+--workdir=\$HOME/bucket/runs/cub_bcnn --distributed=on '
        r'--config\.model\.backbone_a_pretrained=/home/[^/]*/bucket/weights/vgg16 '
        r'--config\.model\.backbone_b_pretrained=/home/[^/]*/bucket/weights/vggm'),
    'CONFIG=configs/cub_bcnn.py WORKDIR=/shared/runs/cub_bcnn sbatch launch/gpu_slurm.sbatch': stub(
        r'(?s)sbatch launch/gpu_slurm\.sbatch\n.*python -m fgjax\.train '
        r'--config=configs/cub_bcnn\.py --workdir=/shared/runs/cub_bcnn --distributed=on\n'),
    'python -m fgjax.train --config=... --workdir=/shared/run --coordinator_address=host0:1234 '
    '--num_processes=N --process_id=i': config(
        subs=[('--config=...', '--config=configs/demo.py'), ('/shared/run', '/tmp/shared_run'),
              ('--num_processes=N', '--num_processes=2'), ('--process_id=i', '--process_id=1')]),
    "pip install 'fgjax[svm]'": PIP,
    # README "Train on your own images". The smoke run's command runs end to end in
    # tests/data/builders/test_image_folder.py; here its flags and config are checked.
    FOLDER_PREPARE: run(r'"num_classes": 2'),
    'python -m fgjax.train --config=configs/image_folder_bcnn.py:runlocal '
    '--workdir=/tmp/my_photos_smoke --config.dataset.path=~/photos': config(),
    'python -m fgjax.train --config=configs/image_folder_bcnn.py --workdir=/tmp/my_photos_bcnn '
    '--config.dataset.path=~/photos --config.model.backbone_a_pretrained=~/weights/vgg16 '
    '--config.model.backbone_b_pretrained=~/weights/vggm': config(),
    'python -m fgjax.train --config=configs/cub_bilinear_lstm.py --workdir=/tmp/my_photos_lstm '
    '--config.dataset.name=image_folder --config.dataset.path=~/photos '
    '--config.model.backbone_a_pretrained=~/weights/vgg19 '
    '--config.model.backbone_b_pretrained=~/weights/vggm': config(),
    "pip install -e '.[onnx]'": PIP,
    'pip install tensorboard && tensorboard --logdir WORKDIR/tensorboard': skip(
        'installs and starts TensorBoard, a server (external tool)'),
    'python -m fgjax.predict --workdir=DIR IMAGE_OR_FOLDER... [--topk=5] [--overlays=OUT]': run(
        r'"topk"', subs=[('DIR', BCNN_RUN), ('IMAGE_OR_FOLDER...', '/tmp/photos/a.png'),
                         ('OUT', '/tmp/readme_overlays'), TOPK],
        after=[README_TRAIN], creates=['/tmp/readme_overlays/a.png.png']),
    'pip install torch==2.13.0': PIP,
    'pip install safetensors': PIP,
    'python -m fgjax.pretrained export': HELP,
    'python -c "from fgjax import methods; print(methods.get(\'a3m\').default_model_config())"':
        run(r'alpha: 0\.5'),
    'python docs/synthetic_grid.py': run(
        extra=' --data_dir={data} --out=/tmp/grid_default.png', creates=['/tmp/grid_default.png']),
    'python -m fgjax.data.prepare --list': run(r'(?m)^cub2011$'),
    'python -m benchmarks.pipeline': HELP,
    'python -m fgjax.train --config=configs/X.py --print_config': run(
        r'(?m)^method: bcnn$', subs=[('configs/X.py', 'configs/synthetic_bcnn.py')]),
    'python -m benchmarks.run --suite cpu': HELP,
    'pip install -U "jax[cuda12]==0.10.2"': PIP,
    'pip install torch==2.13.0 && pip install --no-deps "torchvision==0.28.*"': PIP,
    'python -m benchmarks.backbones --sizes 224 --batch 8': HELP,
    'python -m benchmarks.run': HELP,
    # ---- docs/benchmark.md (its three benchmark commands are README's)
    'python docs/synthetic_grid.py --config=fgvc': run(
        extra=' --out=/tmp/grid_fgvc.png', creates=['/tmp/grid_fgvc.png']),
    'python -m fgjax.pretrained convert': HELP,
    'python -m benchmarks.fgvc_oracles --weights=W': HELP,
    'python -m benchmarks.methods --weights=W --seeds 0,1,2': HELP,
    # ---- docs/benchmarks.md
    'python3 -m venv ~/fgjax-bench': skip('creates a virtual environment (python3 -m venv)'),
    '~/fgjax-bench/bin/pip install -e ".[test]"': PIP,
    '~/fgjax-bench/bin/pip install torch==2.13.0': PIP,
    '~/fgjax-bench/bin/pip install --no-deps "torchvision==0.28.*"': PIP,
    '~/fgjax-bench/bin/python -m benchmarks.run --suite cpu [--only resnet50,bcnn_head] [--quick] '
    '[--out results.jsonl]': Check('help', (('~/fgjax-bench/bin/python', 'python'),)),
    '~/fgjax-bench/bin/python -m benchmarks.run --suite gpu': until_data(
        r'--suite gpu needs a GPU', subs=[('~/fgjax-bench/bin/python', 'python')]),
    'python -m benchmarks.run --suite cpu --out '
    'benchmarks/results/suite_cpu_2core_2026-11-21_quiet.jsonl': HELP,
    'python -m benchmarks.backbone_ab layers': HELP,
    'python -m benchmarks.backbone_ab steps': HELP,
    # real backbones for minutes: tests/test_benchmark_overhead.py runs its rows on small ones
    'python -m benchmarks.run --suite cpu --only overhead': HELP,
    # VGG-16 + VGG-M at batch 8 for minutes: tests/test_benchmarks.py runs the two options on a
    # small backbone
    'python -m benchmarks.run --suite cpu --only overhead --overhead_methods bcnn,bcnn_spp '
    '--overhead_batch 8 --out benchmarks/results/overhead_bcnn_batch8_cpu_2core_2026-12-06.jsonl':
        HELP,
    # compiles real backbones at 448 (minutes each on CPU): tests/test_benchmark_cost.py runs it
    'python -m benchmarks.cost --config=configs/cub_bilinear_lstm.py [--config=...] [--markdown] '
    '[--out FILE]': HELP,
    'python -m benchmarks.cost --all [--markdown] [--out FILE]': HELP,
    'python -m benchmarks.cost --all': HELP,
    'python -m benchmarks.cost --all --markdown --out '
    'benchmarks/results/cost_cpu_2core_2026-12-05.jsonl': HELP,
    # ---- docs/evaluate_and_export.md
    'python -m fgjax.evaluate --workdir=DIR [--config=configs/X.py] [--split=SPLIT] [--noplots] '
    '[--retrieval_queries=6] [--svm [--svm_c=1.0] [--svm_loss=hinge|squared_hinge] '
    '[--svm_normalize=l2|none] [--svm_train_splits=train[,validation]] '
    '[--svm_embedding=features]]': run(
        r'"svm_top1"', subs=[('DIR', BCNN_RUN), ('SPLIT', 'test'), ('train[,validation]', 'train'),
                             ('configs/X.py', 'configs/synthetic_bcnn.py' + TINY)],
        after=[README_TRAIN]),
    'python -m fgjax.export --workdir=DIR --split=SPLIT --out=FILE.npz [--embedding=features] '
    '[--progress] [--overwrite] [--config=configs/X.py]': run(
        subs=[('DIR', BCNN_RUN), ('SPLIT', 'test'), ('FILE.npz', '/tmp/synopsis.npz'),
              ('configs/X.py', 'configs/synthetic_bcnn.py' + TINY)],
        after=[README_TRAIN], creates=['/tmp/synopsis.npz']),
    # the same run as README's demo (one run for both)
    ENGB_TRAIN: train(subs=[('/tmp/engB/demo/run', '/tmp/fgjax_demo')], slow=False),
    'python -m fgjax.evaluate --workdir=/tmp/engB/demo/run --svm': run(
        r'"svm_top1"', subs=[('/tmp/engB/demo/run', '/tmp/fgjax_demo')], after=[ENGB_TRAIN]),
    'python -m fgjax.export --workdir=/tmp/engB/demo/run --split=test '
    '--out=/tmp/engB/demo/test.npz --progress': run(
        # (the run's folder /tmp/engB/demo is README's /tmp/fgjax_demo here: --out goes elsewhere)
        r'export test: ', subs=[('/tmp/engB/demo/run', '/tmp/fgjax_demo'),
                                ('/tmp/engB/demo/test.npz', '/tmp/engB_demo_test.npz')],
        after=[ENGB_TRAIN], creates=['/tmp/engB_demo_test.npz']),
    'python -m fgjax.evaluate': HELP,
    'python -m fgjax.export': HELP,
    # ---- docs/methods/a3m.md
    A3M: train(subs=[('W', '/tmp/a3m')]),
    A3M_SEED1: train(subs=[('W', '/tmp/a3m_seed1')]),
    A3M + ' --config.eval.protocol=reid --config.dataset.eval_split=query': train(
        subs=[('W', '/tmp/a3m_reid')]),
    A3M + ' --config.eval.protocol=retrieval --config.dataset.train_split=retrieval_train '
    '--config.dataset.eval_split=retrieval_test': train(subs=[('W', '/tmp/a3m_retrieval')]),
    'python -m fgjax.train --config=configs/cub_a3m.py:variant=official_code --workdir=DIR':
        until_data(r'(?s)resnet50.* needs ImageNet weights.*cub2011.*CUB_200_2011\.tgz',
                   subs=[('DIR', '/tmp/cub_a3m')]),
    # ---- docs/methods/activation_attention.md
    AA_SINGLE: train(extra=TINY_STAGED),
    AA_CONTINUE2: train(extra=TINY_STAGED, after=[AA_SINGLE]),
    'python -m fgjax.train --config=configs/synthetic_activation_attention.py:continue3 '
    '--config.init_from.path=/tmp/fgjax/aa2 --workdir=/tmp/fgjax/aa23': train(
        extra=TINY_STAGED, after=[AA_CONTINUE2]),
    # :continue trains two scales from aa1 in one command (~35 s of CPU); continue2 and continue3
    # run the same code path, so its config is checked only.
    'python -m fgjax.train --config=configs/synthetic_activation_attention.py:continue '
    '--config.init_from.path=/tmp/fgjax/aa1 --workdir=/tmp/fgjax/aa3': config(),
    'python -c "from fgjax import methods; '
    'print(methods.get(\'activation_attention\').default_model_config())"': run(r'num_scales: 3'),
    # ---- docs/methods/bcnn.md
    'python -c "from fgjax import methods; print(methods.get(\'bcnn\').default_model_config())"':
        run(r'backbone_a: '),
    # ---- docs/methods/bilinear_lstm.md
    'python -m benchmarks.spatial_lstm': HELP,
    'pip install -e . && pip install torch==2.13.0': PIP,
    'python -m fgjax.evaluate --workdir=DIR': run(r'"top1"', subs=[('DIR', BCNN_RUN)],
                                                 after=[README_TRAIN]),
    'python -m fgjax.train --config=configs/synthetic_bilinear_lstm.py --workdir=DIR': train(
        subs=[('DIR', '/tmp/bilinear_lstm')]),
    # ---- docs/methods/classifier.md
    PRE_D: train(extra=TINY.replace('=tiny', '=pretrain_tiny')),
    'python -m fgjax.pretrained export --workdir=/tmp/pre_d --out=/tmp/weights/d': run(
        after=[PRE_D], creates=['/tmp/weights/d/source.json', '/tmp/weights/d/weights'],
        slow=True),
    'python -m benchmarks.pretrain': HELP,
    # ---- docs/methods/focus_discriminate.md
    'python -m fgjax.train --config=configs/synthetic_focus_discriminate.py --workdir=/tmp/fd_s0 '
    '--config.seed=0': train(),
    # the image-level ablation (tests/methods cover its model): its config is checked only
    'python -m fgjax.train --config=configs/synthetic_focus_discriminate.py:image_level '
    '--workdir=/tmp/fd_img_s0 --config.seed=0': config(),
    # ---- docs/predict.md
    'python -m fgjax.predict --workdir=DIR IMAGE_OR_FOLDER... [--topk=K] [--overlays=OUT] '
    '[--step=N] [--batch_size=8] [--progress] [--cell=U,V]': run(
        r'"topk"', subs=[('DIR', BCNN_RUN), ('IMAGE_OR_FOLDER...', '/tmp/photos'), ('K', '2'),
                         ('OUT', '/tmp/synopsis_overlays'), ('N', '1'), ('U,V', '0,0')],
        after=[README_TRAIN], creates=['/tmp/synopsis_overlays/photos__sub__b.jpg.png']),
    'RUNS=/tmp/predA/runs WORKDIR_bcnn=/tmp/fgjax_demo WORKDIR_bilinear_lstm=/tmp/att/'
    'adam15_flatten WORKDIR_a3m=/tmp/a3m_cls_none WORKDIR_activation_attention=/tmp/aa3 '
    'WORKDIR_focus_discriminate=/tmp/fd3_full docs/make_overlay_figures.sh': run(
        # Only bcnn, whose run exists (the others would train for minutes), and a copy of the
        # script: it writes into docs/images/ next to itself.
        subs=[('RUNS=', 'METHODS=bcnn PY={python} RUNS='),
              ('docs/make_overlay_figures.sh', '/tmp/tree/docs/make_overlay_figures.sh')],
        after=[DEMO_TRAIN], creates=['/tmp/tree/docs/images/overlay_bcnn.png']),
    'python -m fgjax.predict': HELP,
    'python -m fgjax.train': HELP,
}


# ---- turning a documented command into the one that runs ---------------------------------------

def _replace_word(text: str, old: str, new: str) -> str:
  """`text` with `old` replaced where it is not part of a longer word (DIR, not DIR1)."""
  return re.sub(r'(?<![\w])' + re.escape(old) + r'(?![\w])', lambda _: new, text)


def concrete(command: str, check: Check, ctx: dict) -> str:
  """The command line that runs: `check.subs`, /tmp/ moved into ctx['tmp'], `...` dropped,
  optional [groups] kept (all options exercised), `a|b` choices reduced to the first, `extra`
  appended, {names} of ctx filled in."""
  text = command
  for old, new in check.subs:
    text = _replace_word(text, old, new) if re.fullmatch(r'[\w.,]+', old) else text.replace(
        old, new)
  text = text + check.extra
  text = re.sub(r'(?<![\w}/.-])/tmp/', '{tmp}/', text)
  text = re.sub(r'(^|\s)\.\.\.(?=\s|$)', '', text)
  while re.search(r'\[[^\[\]]*\]', text):
    text = re.sub(r'\[([^\[\]]*)\]', r'\1', text)
  text = re.sub(r'(=[\w.-]+)(\|[\w.-]+)+', r'\1', text)
  for name, value in ctx.items():
    text = text.replace('{' + name + '}', value)
  return ' '.join(text.split())


def _help_target(command: str) -> tuple[str, ...]:
  """('python', '-m', module, positional words...) of a command run as `python -m module`."""
  match = re.search(r'(?:^|\s)python3? -m ([\w.]+)((?: [a-z][a-z_]*)*)', command)
  assert match, f'not a `python -m MODULE` command: {command}'
  return ('python', '-m', match.group(1)) + tuple(match.group(2).split())


def _flags(command: str) -> list[str]:
  """The --flags of a command (not the --config.FIELD overrides, which only a run checks)."""
  return [f for f in re.findall(r'(?<![\w-])--([A-Za-z][\w-]*)', command)
          if not f.startswith('config.')]


@dataclasses.dataclass(frozen=True)
class Outcome:
  command: str
  returncode: int
  stdout: str
  stderr: str
  seconds: float

  def show(self) -> str:
    return (f'$ {self.command}\nexit {self.returncode} after {self.seconds:.1f} s\n'
            f'--- stdout (end)\n{self.stdout[-3000:]}\n--- stderr (end)\n{self.stderr[-3000:]}')


def _execute(command: str, env: dict, cwd: str = ROOT) -> Outcome:
  start = time.monotonic()
  proc = subprocess.run(['bash', '-c', command], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  return Outcome(command, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


class Runner:
  """Runs commands, each distinct (command, environment) once, in a thread pool; a command's
  prerequisites are submitted before it, so a worker never waits on work that has not started."""

  def __init__(self, ctx: dict, envs: dict, workers: int):
    self.ctx, self.envs = ctx, envs
    self._pool = futures.ThreadPoolExecutor(workers)
    self._lock = threading.Lock()
    self._futures = {}

  def outcome(self, key: str) -> Outcome:
    return self.submit(key).result()

  def submit(self, key: str) -> futures.Future:
    """Start the check of COMMANDS[key] (or of a help target, key = 'help:...')."""
    with self._lock:
      return self._submit(key)

  def _submit(self, key):
    if key.startswith('help:'):
      command, env, deps = key[len('help:'):] + ' --help', 'data', []
    else:
      check = COMMANDS[key]
      command = concrete(key, check, self.ctx)
      env = {'until_data': 'nodata', 'stub': 'stub'}.get(check.kind, 'data')
      deps = [self._submit(d) for d in check.after]
    if (command, env) not in self._futures:
      self._futures[command, env] = self._pool.submit(self._after, deps, command, env)
    return self._futures[command, env]

  def _after(self, deps, command, env):
    for dep in deps:
      if dep.result().returncode != 0:
        raise RuntimeError(f'a command this one needs failed:\n{dep.result().show()}')
    return _execute(command, self.envs[env])

  def close(self):
    self._pool.shutdown(wait=False, cancel_futures=True)


# ---- the test's directories, fake weights, images, stand-in tools -------------------------------

def _fake_weights(out: str, arch: str) -> None:
  """A weight directory of `arch` as `python -m fgjax.pretrained convert` writes it, zero-filled
  (the trunk only: enough for a run that stops at the missing dataset)."""
  module = backbones.get(arch)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                              np.zeros((1, 224, 224, 3), np.uint8), train=False))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  pretrained._write(out, variables, module.preprocessing,  # pylint: disable=protected-access
                    {'arch': arch, 'source': 'zero-filled by tests/test_docs_commands.py'})


def _write_script(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def _stubs(directory: str, log: str, submit_dir: str) -> None:
  """gcloud, sbatch, srun stand-ins that append their command line to `log`; sbatch runs the
  script (from `submit_dir`, which has an empty .venv/bin/activate) and srun its command, with a
  `python` that only records its arguments."""
  os.makedirs(os.path.join(directory, 'py'))
  os.makedirs(os.path.join(submit_dir, '.venv', 'bin'))
  open(os.path.join(submit_dir, '.venv', 'bin', 'activate'), 'w').close()
  record = f'printf "%s\\n" "$(basename "$0") $*" >> {log}\n'
  _write_script(os.path.join(directory, 'gcloud'), '#!/bin/bash\n' + record)
  _write_script(os.path.join(directory, 'sbatch'), '#!/bin/bash\n' + record +
                f'script=$(realpath "$1"); shift\n'
                f'cd {submit_dir} && SLURM_SUBMIT_DIR={submit_dir} exec bash "$script" "$@"\n')
  _write_script(os.path.join(directory, 'srun'), '#!/bin/bash\n' + record +
                'while [[ $1 == --* ]]; do shift; done\n'
                f'PATH={directory}/py:$PATH SLURM_LOCALID=0 exec "$@"\n')
  _write_script(os.path.join(directory, 'py', 'python'), '#!/bin/bash\n' + record)


def _class_folder(directory: str) -> None:
  """A user's folder for image_folder (README "Train on your own images"): 2 classes x 6 PNGs,
  split 5 + 1 per class by the default 20%."""
  rng = np.random.default_rng(1)
  for c in ('blue_jay', 'cardinal'):
    os.makedirs(os.path.join(directory, c))
    for i in range(6):
      Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(
          os.path.join(directory, c, f'{i}.png'))


def _photos(directory: str) -> None:
  """Two images a user might have: a PNG and, in a subfolder, a JPEG."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(directory, 'sub'))
  Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(
      os.path.join(directory, 'a.png'))
  Image.fromarray(rng.integers(0, 256, (64, 50, 3), np.uint8)).save(
      os.path.join(directory, 'sub', 'b.jpg'))


@pytest.fixture(scope='module')
def ctx(tmp_path_factory, data_dir):
  """{name: value} filled into the commands: tmp (where /tmp/ goes), data (the tiny datasets,
  built here once so that parallel runs do not race to build them), python, home (HOME: fake
  ~/weights/vgg16 and vggm, an empty ~/downloads/cub)."""
  tmp = str(tmp_path_factory.mktemp('docs_commands'))
  home = os.path.join(tmp, 'home')
  os.makedirs(os.path.join(home, 'downloads', 'cub'))
  for arch in ('vgg16', 'vggm'):
    _fake_weights(os.path.join(home, 'weights', arch), arch)
  for name in ('tiny', 'pretrain_tiny'):
    datasets.prepare(ml_collections.ConfigDict({'name': 'synthetic_parts', 'config': name,
                                                'data_dir': data_dir, 'manual_dir': None}),
                     log=lambda m: None)
  _photos(os.path.join(tmp, 'photos'))
  _class_folder(os.path.join(home, 'photos'))  # ~/photos (the builder expands ~ itself)
  os.makedirs(os.path.join(tmp, 'tree', 'docs'))
  shutil.copy(os.path.join(ROOT, 'docs', 'make_overlay_figures.sh'),
              os.path.join(tmp, 'tree', 'docs'))
  # `python` and `python3` on PATH: this interpreter (a wrapper, so that its venv is kept).
  bin_dir = os.path.join(tmp, 'bin')
  os.makedirs(bin_dir)
  for name in ('python', 'python3'):
    _write_script(os.path.join(bin_dir, name), f'#!/bin/sh\nexec {sys.executable} "$@"\n')
  _stubs(os.path.join(tmp, 'stubs'), os.path.join(tmp, 'stub.log'), os.path.join(tmp, 'submit'))
  return {'tmp': tmp, 'data': data_dir, 'python': sys.executable, 'home': home}


def _envs(ctx: dict) -> dict:
  """The subprocess environments: 'data' (TFDS_DATA_DIR = the tiny datasets), 'nodata' (an empty
  one: no real dataset is prepared), 'stub' (the cluster tools' stand-ins first on PATH)."""
  base = {k: v for k, v in os.environ.items()
          if k not in ('XLA_FLAGS', 'FGJAX_TRACEBACK', 'TFDS_DATA_DIR', 'JAX_PLATFORMS')}
  tmp = ctx['tmp']
  base.update(PATH=os.path.join(tmp, 'bin') + os.pathsep + base.get('PATH', ''),
              HOME=ctx['home'], JAX_PLATFORMS='cpu', MPLBACKEND='Agg',
              # Commands that compile the same step (two seeds, evaluate after train) share it.
              JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, 'jax_cache'),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return {'data': {**base, 'TFDS_DATA_DIR': ctx['data']},
          'nodata': {**base, 'TFDS_DATA_DIR': os.path.join(tmp, 'tfds_empty')},
          'stub': {**base, 'PATH': os.path.join(tmp, 'stubs') + os.pathsep + base['PATH'],
                   'TFDS_DATA_DIR': os.path.join(tmp, 'tfds_empty')}}


@pytest.fixture(scope='module')
def runner(request, ctx):
  """Starts every selected check of this module at once (2 or 3 workers): the runs others wait
  for first, then the slow ones, then the quick checks."""
  pool = Runner(ctx, _envs(ctx), workers=max(2, min(3, os.cpu_count() or 1)))
  selected = [getattr(getattr(item, 'callspec', None), 'params', {}).get('command')
              for item in request.session.items if item.module is request.module]
  selected = [k for k in selected if k in COMMANDS and COMMANDS[k].kind != 'skip']
  needed = {d for k in selected for d in COMMANDS[k].after}
  # What others wait for first, then the slow runs, then the quick checks.
  for key in sorted(selected, key=lambda k: (k not in needed, not COMMANDS[k].slow)):
    pool.submit(key if COMMANDS[key].kind != 'help' else
                'help:' + ' '.join(_help_target(concrete(key, COMMANDS[key], ctx))))
  yield pool
  pool.close()


# ---- the tests ---------------------------------------------------------------------------------

def test_every_documented_command_has_a_check():
  found = docs_commands.commands_by_file()
  documented = {c for commands in found.values() for c in commands}
  new = [f'{name}: {c}' for name, commands in found.items() for c in commands if c not in COMMANDS]
  stale = sorted(set(COMMANDS) - documented)
  assert not new, ('commands in the docs without a check in COMMANDS (add each with how it is '
                   'checked):\n' + '\n'.join(new))
  assert not stale, 'COMMANDS entries no page has any more:\n' + '\n'.join(stale)


def test_extract_reads_blocks_and_inline_commands():
  text = '\n'.join([
      'Run `python -m fgjax.evaluate',
      '--workdir=DIR` or `configs/x.py` (not a command).',
      '```bash', '$ python -m fgjax.train --config=a.py \\', '    --workdir=/tmp/w  # trailing',
      '# a comment', '```',
      '```', 'images -> stream A', '```',
      '```', 'C="python -m fgjax.train --config=b.py"', '$C --workdir=W', '```',
      '```', 'python -m fgjax.export --workdir=DIR', '    [--progress] [--overwrite]', '```',
      '```python', 'c.stages = ()', '```'])
  assert docs_commands.extract(text) == [
      'python -m fgjax.train --config=a.py --workdir=/tmp/w',
      'python -m fgjax.train --config=b.py --workdir=W',
      'python -m fgjax.export --workdir=DIR [--progress] [--overwrite]',
      'python -m fgjax.evaluate --workdir=DIR']


def test_concrete_fills_placeholders_and_options():
  ctx = {'tmp': '/T', 'data': '/D'}
  check = run(subs=[('DIR', BCNN_RUN), ('SPLIT', 'test'), ('train[,validation]', 'train')])
  assert concrete('python -m fgjax.evaluate --workdir=DIR --x=DIR1 [--split=SPLIT] '
                  '[--svm [--svm_loss=hinge|squared_hinge] [--svm_train_splits=train[,validation]]]'
                  ' ...', check, ctx) == (
      'python -m fgjax.evaluate --workdir=/T/fgjax/bcnn --x=DIR1 --split=test --svm '
      '--svm_loss=hinge --svm_train_splits=train')


def _params():
  """COMMANDS as parameters: short ids, the method trainings marked slow."""
  return [pytest.param(c, id=f'{i:02d}-' + re.sub(r'\W+', '_', c.replace('python -m ', ''))[
      :50].strip('_'), marks=[pytest.mark.slow] if check.slow else [])
          for i, (c, check) in enumerate(COMMANDS.items())]


def _pyproject_pins() -> dict:
  with open(os.path.join(ROOT, 'pyproject.toml')) as f:
    text = f.read()
  pins = {}
  for name, version in re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(?:==|>=)([0-9][\w.]*)', text):
    pins.setdefault(name.lower(), version)
  return pins


def _check_outcome(command: str, check: Check, out: Outcome, ctx: dict) -> None:
  text = out.stdout + out.stderr
  assert 'Traceback' not in text, out.show()
  if check.kind in ('run', 'config', 'stub'):
    assert out.returncode == 0, out.show()
  if check.kind == 'run':
    assert not check.expect or re.search(check.expect, text), (check.expect, out.show())
    for path in check.creates:
      path = concrete(path, Check('run'), ctx)
      assert os.path.exists(path), (f'{path} was not written', out.show())
  elif check.kind == 'config':
    assert re.search(r'(?m)^(\[\d+\] )?method: \w+$', out.stdout), out.show()
  elif check.kind == 'until_data':
    assert out.returncode == 2, out.show()
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith(check.prefix)] if check.prefix else (
        [len(lines) - 1] if lines else [])
    assert len(errors) == 1, ('expected one error line', out.show())
    message = '\n'.join(lines[errors[0]:])
    assert re.search(check.expect, message), (check.expect, out.show())
  elif check.kind == 'stub':
    with open(os.path.join(ctx['tmp'], 'stub.log')) as f:
      log = f.read()
    assert re.search(check.expect, log), (check.expect, log, out.show())


@pytest.mark.parametrize('command', _params())
def test_documented_command(command, runner, ctx):
  check = COMMANDS[command]
  if check.kind == 'skip':
    assert check.reason
    pins = _pyproject_pins()
    for name, version in re.findall(r'([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][\w.*]*)', command):
      if name.lower() in pins:
        assert version == pins[name.lower()], (command, name, pins[name.lower()])
    return
  if check.kind == 'help':
    target = ' '.join(_help_target(concrete(command, check, ctx)))
    out = runner.outcome('help:' + target)
    assert out.returncode == 0 and out.stdout.strip(), out.show()
    missing = [f for f in _flags(command)
               if not re.search(rf'--(\[no\])?{re.escape(f)}\b', out.stdout)]
    assert not missing, (f'flags not in {target} --help: {missing}', out.show())
    return
  _check_outcome(command, check, runner.outcome(command), ctx)
