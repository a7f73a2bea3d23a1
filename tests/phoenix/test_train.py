import msgspec
import numpy as np
import pytest
import torch

from tests.phoenix.factories import engagement_table, random_batch, tiny_config
from xserve.config import MixerConfig
from xserve.phoenix.training.evaluate import evaluate, viewer_dependence
from xserve.phoenix.training.train import (
    RANKER_FILE,
    TOWERS_FILE,
    deterministic,
    load_ranker,
    load_towers,
    prepare,
    resolve_num_threads,
    train,
    train_ranker,
)
from xserve.schema import ACTIONS

# the sliding window (trim block 1): with a 16-entry history the default block (8 here) leaves 9-16 entries,
# and these four epochs over a 60-user log then learn too little to show; the block rule has its own tests
# (tests/users/test_history.py, tests/phoenix/test_history_parity.py)
CONFIG = msgspec.structs.replace(tiny_config(epochs=4, embedding_learning_rate=0.05),
                                 mixer=MixerConfig(history_trim_block=1))


@pytest.fixture(scope="module")
def log():
    return engagement_table()


@pytest.fixture(scope="module")
def trained(log, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    return train(*log, CONFIG, out_dir=out), out


def test_training_lowers_both_losses(trained):
    m = trained[0].metrics
    assert m["ranker"]["train_bce_last"] < m["ranker"]["train_bce_first"] - 0.05
    assert m["towers"]["train_loss_last"] < m["towers"]["train_loss_first"] - 0.5
    assert np.isfinite(m["ranker"]["val_bce"])


def test_checkpoints_round_trip(trained):
    result, out = trained
    ranker, towers = load_ranker(out / RANKER_FILE), load_towers(out / TOWERS_FILE)
    assert ranker.version.startswith("ranker-") and towers.version.startswith("towers-")
    assert ranker.metrics["steps"] > 0 and ranker.config == CONFIG.phoenix
    assert ranker.hasher.constants == result.data.hasher.constants
    ctx, cand = random_batch(b=2, s=5, c=3, seed=4, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(ranker.model(ctx, cand).logits, result.ranker(ctx, cand).logits)
        assert torch.equal(towers.model.user_embeddings(ctx), result.towers.user_embeddings(ctx))
    with pytest.raises(FileNotFoundError, match="xserve train"):
        load_ranker(out / "nope.pt")
    with pytest.raises(ValueError, match="ranker checkpoint"):
        load_ranker(out / TOWERS_FILE)


def test_a_checkpoint_trained_with_exact_gelu_is_refused(trained, tmp_path):
    """Format 1 (before the FFN's GELU became the reference's tanh approximation) would serve skewed scores."""
    _, out = trained
    payload = torch.load(out / RANKER_FILE, weights_only=True)
    torch.save({**payload, "format": 1}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"format-1 ranker checkpoint \(trained with exact GELU\).*xserve train"):
        load_ranker(tmp_path / "old.pt")


def test_evaluation_has_the_stable_shape_and_beats_the_baselines(trained):
    result, _ = trained
    ev = evaluate(result.data, result.ranker, result.towers, seed=0)
    assert set(ev) == {"ranker", "retrieval", "next_engagement", "baselines"}
    assert set(ev["baselines"]) == {"popularity", "item_knn", "random"}
    assert set(ev["ranker"]) == {"auc", "rce", "viewer_dependence"}  # the model's own: another viewer put in
    assert 0.0 <= ev["ranker"]["viewer_dependence"] < 10.0
    for section in (ev, ev["baselines"]["popularity"], ev["baselines"]["item_knn"], ev["baselines"]["random"]):
        assert {"auc", "rce"} <= set(section["ranker"])
        assert set(section["ranker"]["auc"]) == {"favorite", "click", "not_interested"}  # only actions in the data
        assert set(section["retrieval"]) == {"recall@10", "recall@100", "recall@1000"}
        assert set(section["next_engagement"]) == {"hr@10", "ndcg@10"}
    assert set(ev["ranker"]["auc"]) <= {a.value for a in ACTIONS}
    assert ev["ranker"]["auc"]["favorite"] > max(0.7, ev["baselines"]["popularity"]["ranker"]["auc"]["favorite"])
    assert ev["retrieval"]["recall@10"] > ev["baselines"]["random"]["retrieval"]["recall@10"]
    assert ev == evaluate(result.data, result.ranker, result.towers, seed=0)  # seeded


def test_training_is_deterministic_under_a_seed(log):
    config = tiny_config(epochs=1, ranker_examples_per_epoch=96)
    states = []
    for _ in range(2):
        with deterministic(config.train.seed, 1) as rng:
            model, _ = train_ranker(prepare(*log, config), rng)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    with deterministic(config.train.seed + 1, 1) as rng:
        other, _ = train_ranker(prepare(*log, config), rng)
    assert not torch.equal(other.state_dict()["action_head.weight"], states[0]["action_head.weight"])


@pytest.mark.parametrize(("setting", "cores", "load", "threads"), [
    ("auto", 2, 0.3, 2),  # an idle 2-core box: both cores
    ("auto", 2, 1.9, 2),
    ("auto", 2, 2.0, 1),  # the load already fills the cores: a shared box, one thread
    ("auto", 8, 30.0, 1),
    ("auto", 1, 0.0, 1),
    ("auto", 0, 0.0, 1),  # no affinity reported: still one thread
    (3, 2, 50.0, 3),  # a number is used as given
])
def test_thread_count_resolution(setting, cores, load, threads):
    assert resolve_num_threads(setting, cores, load) == threads


def test_thread_count_rejects_nonsense():
    for bad in (0, -1, "many"):
        with pytest.raises(ValueError, match="num_threads"):
            resolve_num_threads(bad, 2, 0.0)


def test_served_tower_encoders_equal_the_embeddings_evaluation_searches(trained):
    """The ANN index is filled by the serving encoders and searched with their user vectors; evaluation's brute
    force uses the trained towers directly: the two must be the same vectors (no training-only parameter left)."""
    from xserve.phoenix.training.data import context_batch
    from xserve.retrieval.towers import load_tower_encoders
    from xserve.schema import ACTIONS, HistoryItem, ProductSurface, RetrievalRequest

    result, out = trained
    users, posts, _ = load_tower_encoders(str(out / TOWERS_FILE), CONFIG.phoenix.emb_dim)
    c, e, h = result.data.corpus, result.data.entries, result.data.hasher
    with torch.no_grad():
        brute = result.towers.candidate_embeddings(torch.from_numpy(h("post", c.post)), torch.from_numpy(h("author", c.author)))
    np.testing.assert_allclose(posts.encode_posts(c.post, c.author), brute.numpy(), atol=1e-6)
    start, cut = e.starts[:3], e.starts[:3] + 5  # three users' first five entries
    with torch.no_grad():
        expected = result.towers.user_embeddings(context_batch(e, start, cut - start, result.data.featurizer)).numpy()
    requests = [RetrievalRequest(user_id=int(e.user[s]), max_results=10, history=tuple(
        HistoryItem(int(e.post[i]), int(e.author[i]), frozenset(a for k, a in enumerate(ACTIONS) if e.bits[i] >> k & 1),
                    int(e.ts[i]), ProductSurface(int(e.surface[i]))) for i in range(s, s + 5))) for s in start]
    np.testing.assert_allclose(users.encode_users(requests), expected, atol=1e-5)


def test_tower_negatives_mix_in_batch_frequency_with_uniform_draws_from_the_query_window():
    from xserve.phoenix.training.data import PostCorpus, aggregate
    from xserve.phoenix.training.train import TowerNegatives

    hour = 3_600_000
    eng, posts = engagement_table(n_users=5, per_user=4)
    corpus = PostCorpus.build(aggregate(eng, 300_000), posts)
    negatives = TowerNegatives(np.array([corpus.post[0], corpus.post[0], corpus.post[1]]), corpus, 400, 10 * hour)
    assert negatives.in_batch_freq(np.array([corpus.post[0], corpus.post[1], -7])) == pytest.approx([2 / 3, 1 / 3, 0])
    at = int(corpus.created[len(corpus) // 2])
    rows, width = negatives.uniform(np.array([at]), np.random.default_rng(0))
    in_window = (corpus.created <= at) & (corpus.created >= at - 10 * hour)
    assert len(rows) == 400 and in_window[rows].all() and width == in_window.sum()
    assert len(np.unique(rows)) > 0.5 * min(400, width)  # uniform: most of a small window is drawn


def test_viewer_dependence_is_zero_for_one_order_for_everyone():
    logits = np.array([0.0, 1.0, 2.0, 3.0])
    assert viewer_dependence(logits, logits) == 0.0  # popularity or recency: the same scores whoever reads
    assert viewer_dependence(logits, logits[::-1]) == pytest.approx(2.0 / logits.std())
    assert viewer_dependence(np.ones(3), np.zeros(3)) == 0.0  # no spread: nothing to order
