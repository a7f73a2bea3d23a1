import pytest

from xserve.config import ConfigError, XServeConfig, load_config


def test_reference_defaults():
    c = XServeConfig()
    w = c.scoring.weights
    assert (w.favorite, w.reply, w.report, w.share_via_copy_link) == (0.5, 5.0, -234.0, 20.0)
    assert (c.mixer.top_k, c.mixer.result_size, c.mixer.max_post_age_ms) == (50, 35, 48 * 3600 * 1000)
    assert (c.scoring.author_diversity_decay, c.scoring.author_diversity_floor, c.scoring.oon_weight_factor) == (0.5, 0.25, 0.75)


def test_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[mixer]\ntop_k = 40\nresult_size = 20\n[scoring.weights]\nfavorite = 1.5\n")
    c = load_config(f, environ={"XSERVE__MIXER__RESULT_SIZE": "10", "XSERVE_DATA_DIR": "/d"})
    assert (c.mixer.top_k, c.mixer.result_size, c.scoring.weights.favorite) == (40, 10, 1.5)
    assert c.scoring.weights.reply == 5.0 and c.storage.data_dir == "/d"
    y = tmp_path / "c.yaml"
    y.write_text("thunder:\n  num_shards: 8\n")
    assert load_config(y, environ={}).thunder.num_shards == 8


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[mixer]\ntopk = 3\n", "unknown field `topk`"),
        ("[mixer]\ntop_k = 'x'\n", "mixer.top_k"),
        ("[nope]\na = 1\n", "unknown field `nope`"),
        ("not toml [", "not valid"),
        ("[serving]\nserve_control_loop_s = 0\n", "serving.serve_control_loop_s must be > 0"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, needle):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(f, environ={})


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml", environ={})
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ConfigError, match=".toml"):
        load_config(tmp_path / "c.ini", environ={})


def test_string_fields_take_the_raw_environment_value():
    for raw in ("12345", "true", "1e5", '"quoted"', "s3cret"):
        assert load_config(environ={"XSERVE__SERVING__API_KEY": raw}).serving.api_key == raw
    assert load_config(environ={"XSERVE__SERVING__MAX_INFLIGHT_FEEDS": "3"}).serving.max_inflight_feeds == 3


def test_visibility_levels_default_stricter_for_recommendations_and_keep_their_rules():
    from xserve.schema import VisibilityLabel

    mixer = XServeConfig().mixer
    assert set(mixer.out_of_network_visibility_drop) == set(VisibilityLabel)  # every label drops a recommendation
    assert set(mixer.in_network_visibility_drop) == set(VisibilityLabel) - {VisibilityLabel.NSFW}
    c = load_config(environ={"XSERVE__MIXER__IN_NETWORK_VISIBILITY_DROP": '["deleted", "spam"]'})
    assert c.mixer.in_network_visibility_drop == (VisibilityLabel.DELETED, VisibilityLabel.SPAM)
    with pytest.raises(ConfigError, match="mixer.*deleted"):  # a deleted post is never served
        load_config(environ={}, overrides={"mixer": {"in_network_visibility_drop": ["spam"]}})
    with pytest.raises(ConfigError, match="mixer.*out_of_network_visibility_drop.*gore"):  # never laxer than followed
        load_config(environ={}, overrides={"mixer": {"out_of_network_visibility_drop": ["deleted", "spam"]}})
    with pytest.raises(ConfigError, match="in_network_visibility_drop"):
        load_config(environ={}, overrides={"mixer": {"in_network_visibility_drop": ["deleted", "rude"]}})


def test_a_number_or_auto_field_parses_numbers_and_keeps_words():
    assert load_config(environ={}).train.num_threads == "auto"
    assert load_config(environ={"XSERVE__TRAIN__NUM_THREADS": "2"}).train.num_threads == 2
    assert load_config(environ={"XSERVE__TRAIN__NUM_THREADS": "auto"}).train.num_threads == "auto"
    with pytest.raises(ConfigError, match="num_threads"):
        load_config(environ={"XSERVE__TRAIN__NUM_THREADS": "many"})


def test_every_issue_17_ranking_knob_has_a_reason_in_config_show():
    from xserve.config import config_reasons

    reasons = config_reasons()
    knobs = ["scoring.scorer", "scoring.weights.video_open", "scoring.weights.link_open",
             *(f"scoring.value_model.{f}" for f in ("watch_time", "profile_visit_time", "click_dwell_time",
                                                    "mutual_follow_dwell_boost", "mutual_follow_reply_boost",
                                                    "author_exploration_bonus", "perturbation_sigma",
                                                    "perturbation_salt")),
             "phoenix.history_age_buckets", "phoenix.context_vocab", "phoenix.max_context_topics",
             "train.duration_loss_weight"]
    assert all(reasons[k] for k in knobs), [k for k in knobs if not reasons[k]]
    assert reasons["mixer.top_k"] == "reference TOP_K_CANDIDATES_TO_SELECT"
