"""Lesson 04 checkpoints: sharded FSDP checkpoints resume on the same loss curve; the final model is one full
folder; an interrupted save is skipped; the recipe presets checkpoint within their own runs."""
from __future__ import annotations

import pytest
from test_train import config, data_file, tiny_model  # noqa: F401 (fixtures)

from alpaca_nb.checkpoints import resume_checkpoint
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.fileio import read_jsonl
from alpaca_nb.train import train
from alpaca_nb.train_config import PRESETS

ALPACA_RECORDS = 52_002


def test_fsdp_sharded_checkpoint_resumes_on_the_same_loss_curve(data_file, tiny_model, tmp_path):  # noqa: F811
    """2 gloo processes, 4 steps, a checkpoint every 2. A run killed after its step-2 checkpoint leaves only that
    checkpoint: resuming it must continue the uninterrupted run's loss curve and end on the same weights."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    def fsdp(out, **overrides):
        return train(config(data_file, out, tiny_model, mode="fsdp", max_steps=4, save_steps=2, save_total_limit=2,
                            **overrides), nproc=2)

    straight = fsdp(tmp_path / "a")
    assert straight["wrapped_as"].startswith("FSDP")
    ckpt = tmp_path / "a" / "checkpoints" / "checkpoint-2"
    assert len(list((ckpt / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2  # one shard file per rank
    assert len(list((ckpt / "optimizer_0").glob("*.distcp"))) == 2
    gathered = [p.name for p in ckpt.iterdir() if p.suffix in (".safetensors", ".bin")]
    assert gathered == [], f"a full state dict was gathered into the checkpoint: {gathered}"

    run = tmp_path / "b"  # what the killed run left on disk
    shutil.copytree(ckpt, run / "checkpoints" / "checkpoint-2")
    resumed = fsdp(run, resume=True)
    assert resumed["resumed_from"] == str(run / "checkpoints" / "checkpoint-2") and resumed["steps"] == 4
    assert resumed["tokens_seen"] * 2 == straight["tokens_seen"]  # it trained steps 3-4 only, not 1-4 again
    log, expected = read_jsonl(run / "loss_log.jsonl"), read_jsonl(tmp_path / "a" / "loss_log.jsonl")
    assert [e["step"] for e in log] == [e["step"] for e in expected] == [1, 2, 3, 4]
    assert [e["loss"] for e in log] == pytest.approx([e["loss"] for e in expected], rel=1e-4)

    assert [p.name for p in (run / "model").glob("*.safetensors")] == ["model.safetensors"]  # one full copy
    final = AutoModelForCausalLM.from_pretrained(run / "model").state_dict()
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "model").state_dict()
    assert final.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_resume_skips_and_removes_a_checkpoint_cut_off_mid_write(data_file, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "run" / "checkpoints"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-10" / "pytorch_model_fsdp_0").mkdir(parents=True)  # killed while saving step 10

    with pytest.raises(AlpacaNbError, match="--resume"):
        resume_checkpoint(config(data_file, tmp_path / "run", "default"))
    assert resume_checkpoint(config(data_file, tmp_path / "run", "default", resume=True)) == \
        str(folder / "checkpoint-2")
    assert "checkpoint-10 is incomplete" in capsys.readouterr().err
    assert not (folder / "checkpoint-10").exists() and (folder / "checkpoint-2").is_dir()


@pytest.mark.parametrize("preset", ["alpaca-7b", "alpaca-13b"])
def test_recipe_presets_checkpoint_several_times_over_alpaca_data(preset):
    """52,002 records at batch 128: ~406 steps an epoch (1,218 for 7B's 3 epochs, 2,030 for 13B's 5)."""
    values = PRESETS[preset]
    steps = ALPACA_RECORDS // values["effective_batch_size"] * values["num_epochs"]
    assert steps // values["save_steps"] >= 5
