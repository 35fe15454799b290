"""Lesson 05: eval sets, batched generation (real embedded model), adapters, endpoints, model_outputs.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alpaca_nb import answers
from alpaca_nb.cli import main
from alpaca_nb.data import Example, load_alpaca_eval
from alpaca_nb.errors import REDACTED, AlpacaNbError
from alpaca_nb.fileio import atomic_write_json, read_json
from alpaca_nb.model import model_identity
from alpaca_nb.server import Endpoint
from tests.openai_stub import OpenAIStub, Reply

PROMPTS = ["Name three primary colors.",
           "Rewrite the sentence so it is shorter and clearer, keeping its meaning.",
           "What is 2 + 2?",
           "Write one sentence about the sea at night, with the wind blowing over the waves."]


@pytest.fixture(scope="module")
def lm(model_dir):
    return answers.load_local_model(model_dir)


def _items(n: int = 3) -> list[Example]:
    return [Example(p, "", "", "test", str(i), {"dataset": "test"}) for i, p in enumerate(PROMPTS[:n])]


def test_user_oriented_set_joins_davinci_answers_and_matches_alpaca_eval():
    items = answers.load_eval_set("user_oriented")
    assert len(items) == 252
    assert all(it.output and it.meta["generator"] == "text_davinci_003" for it in items)
    # Our instruction+input text is exactly how AlpacaEval stores the same 252 tasks (its "selfinstruct" subset).
    alpaca_eval = {e.instruction for e in load_alpaca_eval("text_davinci_003") if e.meta["dataset"] == "selfinstruct"}
    assert {r["instruction"] for r in answers.reference_outputs(items)} == alpaca_eval
    human = answers.load_eval_set("user_oriented", reference="human", n=5, seed=1)
    assert [h.id for h in human] == [it.id for it in answers.load_eval_set("user_oriented", n=5, seed=1)]
    assert human[0].output != items[int(human[0].id.rsplit("_", 1)[1])].output


def test_alpaca_eval_set_subsets_and_errors():
    sub = answers.load_eval_set("alpaca_eval", reference="gpt4_1106_preview", n=6, seed=0)
    assert len(sub) == 6 and sub == answers.load_eval_set("alpaca_eval", reference="gpt4_1106_preview", n=6, seed=0)
    assert [int(s.id) for s in sub] == sorted(int(s.id) for s in sub)
    assert {r["generator"] for r in answers.reference_outputs(sub)} == {"gpt4_1106_preview"}
    with pytest.raises(AlpacaNbError, match="has no reference 'human'"):
        answers.load_eval_set("alpaca_eval", reference="human")
    with pytest.raises(AlpacaNbError, match="unknown eval set"):
        answers.load_eval_set("mmlu")


def test_batched_greedy_equals_one_at_a_time(lm):
    prompts = [answers.build_prompt(it, "alpaca") for it in _items(4)]
    batched = answers.generate_tokens(lm, prompts, batch_size=4, max_new_tokens=12, progress=False)
    single = [answers.generate_tokens(lm, [p], batch_size=1, max_new_tokens=12, progress=False)[0] for p in prompts]
    assert batched == single
    assert all(0 < len(ids) <= 12 for ids in batched)
    assert all(lm.tokenizer.eos_token_id not in ids for ids in batched)


def test_sampling_is_seeded(lm):
    prompts = [answers.build_prompt(it, "chat", lm.tokenizer) for it in _items(2)]
    run = lambda seed: answers.generate(lm, prompts, max_new_tokens=8, temperature=1.0, seed=seed,  # noqa: E731
                                        progress=False)
    assert run(1) == run(1)


def test_lora_adapter_folder_loads_on_its_base(lm, model_dir, isolated_outputs):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    assert answers.finetuned_model_dir() is None  # lesson 04 has not run in this test's outputs
    adapter_dir = isolated_outputs / "04_finetune" / "adapter"
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter_dir)
    assert answers.finetuned_model_dir() == adapter_dir  # lesson 04's LoRA output is found
    adapted = answers.load_local_model(adapter_dir)
    assert isinstance(adapted.model, PeftModel) and adapted.name == "adapter"
    prompts = [answers.build_prompt(it) for it in _items(2)]
    # A fresh LoRA adapter starts as the identity (B = 0), so it must answer exactly as its base.
    assert answers.generate(adapted, prompts, max_new_tokens=6, progress=False) == \
        answers.generate(lm, prompts, max_new_tokens=6, progress=False)


def test_answer_writes_alpaca_eval_outputs_and_resumes(lm, tmp_path):
    out = tmp_path / "model_outputs.json"
    items = _items(3)
    records = answers.answer(items, lm, generator="smol", out_path=out, batch_size=2, max_new_tokens=6,
                             progress=False)
    assert json.loads(out.read_text()) == records
    assert [set(r) for r in records] == [{"instruction", "output", "generator", "dataset", "answer_settings"}] * 3
    assert records[0]["answer_settings"] == answers.answer_settings(lm, max_new_tokens=6)
    assert records[0]["answer_settings"]["model"] == str(Path(lm.path).resolve())
    assert [r["instruction"] for r in records] == PROMPTS[:3] and {r["generator"] for r in records} == {"smol"}
    before = out.stat().st_mtime_ns
    assert answers.answer(items, lm, generator="smol", out_path=out, max_new_tokens=6, progress=False) == records
    assert out.stat().st_mtime_ns == before  # everything was already answered: nothing regenerated or rewritten
    other = answers.LocalModel(lm.model, lm.tokenizer, "smol", path=str(tmp_path))  # another folder, same name
    with pytest.raises(AlpacaNbError, match="already holds answers of generator 'smol' from model"):
        answers.answer(items, other, generator="smol", out_path=out, max_new_tokens=6, progress=False)
    assert out.stat().st_mtime_ns == before


def test_input_is_folded_into_the_instruction():
    item = Example("Translate to French.", "Good morning", "Bonjour", "t", "0", {"dataset": "selfinstruct"})
    assert answers.output_record(item, "x", "g")["instruction"] == "Translate to French.\n\nGood morning"
    assert "### Input:\nGood morning" in answers.build_prompt(item, "alpaca")
    assert answers.build_prompt(item, "chat") == [{"role": "user", "content": "Translate to French.\n\nGood morning"}]


def test_alpaca_lora_prompt_format_prompts_as_alpaca_lora_trained(tmp_path, capsys):
    """An adapter trained by tloen/alpaca-lora saw its templates/alpaca.json: "### Response:" and a newline."""
    item = Example("Translate to French.", "Good morning", "Bonjour", "t", "0", {"dataset": "selfinstruct"})
    lora = answers.build_prompt(item, "alpaca-lora")
    assert lora == answers.build_prompt(item, "alpaca") + "\n" and lora.endswith("### Input:\nGood morning\n\n"
                                                                                "### Response:\n")
    with OpenAIStub(default=lambda body: Reply(text="Bonjour")) as stub:
        assert main(["answer", "--backend", "url", "--base-url", stub.base_url, "--model", "org/lora",
                     "--prompt-format", "alpaca-lora", "--eval-set", "alpaca_eval", "-n", "1", "--workers", "1",
                     "--out", str(tmp_path / "outputs.json")]) == 0
    assert stub.requests[-1]["path"] == "/v1/completions"
    assert stub.requests[-1]["body"]["prompt"].endswith("### Response:\n")
    assert read_json(tmp_path / "outputs.json")[0]["answer_settings"]["prompt_format"] == "alpaca-lora"
    with pytest.raises(SystemExit) as exit_:
        main(["answer", "--prompt-format", "vicuna"])
    assert exit_.value.code == 2
    assert "invalid choice: 'vicuna'" in capsys.readouterr().err


def test_answers_through_an_openai_compatible_endpoint(local_endpoint):
    records = answers.answer(_items(2), endpoint=local_endpoint, prompt_format="chat", max_new_tokens=8,
                             workers=2, progress=False)
    assert [r["generator"] for r in records] == [Path(local_endpoint.model).name] * 2
    assert all(isinstance(r["output"], str) and r["output"] for r in records)


def test_bad_model_outputs_file_names_the_record(tmp_path):
    path = atomic_write_json(tmp_path / "bad.json", [{"instruction": "a", "output": "b", "generator": "g"},
                                                     {"instruction": "c", "generator": "g"}])
    with pytest.raises(AlpacaNbError, match="record 1: missing or non-text 'output'"):
        answers.read_model_outputs(path)
    with pytest.raises(AlpacaNbError, match="does not exist"):
        answers.load_local_model(tmp_path / "no-such-model")


def test_cli_answer(isolated_outputs, capsys, monkeypatch):
    assert main(["answer", "--eval-set", "alpaca_eval", "-n", "2", "--max-new-tokens", "4", "--generator", "smol"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 2 and printed["generator"] == "smol"
    written = json.loads((isolated_outputs / "05_evaluate" / "model_outputs.json").read_text())
    expected = answers.reference_outputs(answers.load_eval_set("alpaca_eval", n=2, seed=0))
    assert [(r["instruction"], r["dataset"]) for r in written] == [(r["instruction"], r["dataset"]) for r in expected]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["answer", "--eval-set", "alpaca_eval", "--backend", "openai"]) == 2  # no key: a clear error
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_answers_are_asked_again_when_a_setting_changes(tmp_path):
    """The cache is keyed by every setting that changes an answer, not by the generator's name alone."""
    out = tmp_path / "model_outputs.json"
    with OpenAIStub(default=lambda body: Reply(text=f"answer in {body['max_tokens']} tokens")) as stub:
        endpoint = Endpoint(stub.base_url, "org/model", "none")

        def run(**settings):
            return answers.answer(_items(2), endpoint=endpoint, out_path=out, workers=1, progress=False,
                                  **({"prompt_format": "chat", "max_new_tokens": 8} | settings))

        first = run()
        assert run() == first and len(stub.requests) == 2  # same settings: reused
        assert [r["output"] for r in run(max_new_tokens=16)] == ["answer in 16 tokens"] * 2
        assert len(stub.requests) == 4
        run(max_new_tokens=16, prompt_format="alpaca")
        assert len(stub.requests) == 6 and stub.requests[-1]["path"] == "/v1/completions"
        last = run(max_new_tokens=16, prompt_format="alpaca", temperature=0.5)
        assert len(stub.requests) == 8 and stub.requests[-1]["body"]["temperature"] == 0.5
    assert read_json(out) == last  # replaced in place, one record per item
    assert last[0]["answer_settings"] == {"endpoint": stub.base_url, "model": "org/model", "weights": None,
                                          "prompt_format": "alpaca", "max_new_tokens": 16, "temperature": 0.5,
                                          "seed": 0}


@pytest.mark.parametrize("key", ["sk-test-ECHOED-KEY-0123456789abcdef", "custom-proxy-token-42"])
def test_an_echoed_key_never_reaches_messages_or_files(key, tmp_path, monkeypatch):
    """A proxy that repeats the API key in its answers, then in a 401 error: the key is in neither the message nor
    the answers saved before the failure (4 answers, one batch, then the 5th item fails)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "model_outputs.json"
    items = [Example(f"Task {i}.", "", "", "test", str(i), {"dataset": "test"}) for i in range(5)]
    echoes = [Reply(text=f"An answer. (proxy: you sent {key})")] * 4
    with OpenAIStub(echoes, default=lambda body: Reply(status=401, echo_auth=True)) as stub:
        with pytest.raises(AlpacaNbError) as failed:
            answers.answer(items, endpoint=Endpoint(stub.base_url, "org/model", key), prompt_format="chat",
                           out_path=out, workers=1, progress=False)
    assert stub.requests[-1]["authorization"] == f"Bearer {key}"  # the server did get (and echo) it
    message, saved = str(failed.value), out.read_text()
    assert key not in message + saved
    assert "item '4': request failed (Error code: 401" in message and f"Bearer {REDACTED}" in message
    assert len(read_json(out)) == 4 and REDACTED in saved


def test_model_identity_follows_the_weights(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"1")
    first = model_identity(folder)
    assert first == model_identity(folder) and first["model"] == str(folder.resolve())
    (folder / "model.safetensors").write_bytes(b"22")  # retrained in place
    assert model_identity(folder)["model"] == first["model"] and model_identity(folder)["weights"] != first["weights"]
    assert model_identity("gpt-4o-mini") == {"model": "gpt-4o-mini", "weights": None}
    # a server started for one run gets a new port every run: the port is no part of the key; a URL given is
    served = [Endpoint(f"http://127.0.0.1:{port}/v1", str(folder), "local", started_here=True) for port in (1, 2)]
    assert served[0].identity() == served[1].identity()
    assert Endpoint("http://h:1/v1", "m", "k").identity() != Endpoint("http://h:2/v1", "m", "k").identity()
    assert "k" not in Endpoint("http://h:1/v1", "m", "sk-secret").identity().values()


def test_temperature_reaches_the_local_model_and_the_endpoint(lm, tmp_path):
    """Sampling is not greedy decoding with another name: on the embedded model temperature 1 with a fixed seed
    answers differently from greedy (for at least one of two prompts) and the same again with the same seed;
    `alpaca-nb answer --temperature` sends it in every request body to an endpoint."""
    items = _items(2)
    run = lambda **kw: [r["output"] for r in answers.answer(items, model=lm, max_new_tokens=8,  # noqa: E731
                                                            progress=False, **kw)]
    greedy, sampled = run(), run(temperature=1.0, seed=3)
    assert sampled != greedy and run(temperature=1.0, seed=3) == sampled
    with OpenAIStub(default=lambda body: Reply(text="An answer.")) as stub:
        assert main(["answer", "--backend", "url", "--base-url", stub.base_url, "--model", "org/model",
                     "--eval-set", "alpaca_eval", "-n", "2", "--workers", "1", "--temperature", "0.7",
                     "--out", str(tmp_path / "outputs.json")]) == 0
    assert len(stub.requests) == 2 and all(r["body"]["temperature"] == 0.7 for r in stub.requests)
    assert read_json(tmp_path / "outputs.json")[0]["answer_settings"]["temperature"] == 0.7
