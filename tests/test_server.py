"""The local OpenAI-compatible server starts, answers through the openai client, and always stops."""
import socket

import pytest

from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.server import local_server, open_endpoint, remote_endpoint


def test_local_server_answers_and_stops(model_dir, tmp_path):
    with local_server(model_dir, log_path=tmp_path / "serve.log") as endpoint:
        port = int(endpoint.base_url.rsplit(":", 1)[1].split("/")[0])
        reply = endpoint.client().chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=12, temperature=0)
        assert "Paris" in reply.choices[0].message.content
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert (tmp_path / "serve.log").stat().st_size > 0


def test_server_failure_names_its_log(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # looks like a model folder, but the server cannot load it
    with pytest.raises(RuntimeError, match=r"exited with code .*see its log"):
        with local_server(broken, log_path=tmp_path / "serve.log", startup_timeout=60):
            pass


def test_missing_or_empty_model_folder_is_refused_before_starting(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlpacaNbError, match="model folder .*no-such-model does not exist"):
        with open_endpoint("local", model=str(tmp_path / "no-such-model"), log_path=tmp_path / "serve.log"):
            pass
    with pytest.raises(AlpacaNbError, match="empty is not a model folder"):
        with local_server(tmp_path / "empty", log_path=tmp_path / "serve.log"):
            pass
    assert not (tmp_path / "serve.log").exists()  # no server was started


def test_openai_backend_without_key_explains_offline_use(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY.*backend 'local'"):
        with open_endpoint("openai", model="gpt-4o-mini"):
            pass
    endpoint = remote_endpoint("openai", model="gpt-4o-mini", api_key="sk-secret-value")
    assert "sk-secret" not in repr(endpoint)
