"""verl finds `tapo` through the entry point alone, in a fresh process (as in every Ray worker)."""

import subprocess
import sys


def test_import_verl_alone_registers_tapo_in_a_fresh_process():
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "print(get_adv_estimator_fn('tapo').__module__)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "recipe_tapo.advantage"
