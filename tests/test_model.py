"""BertApproxModel: invariances, the empty bag, parameter budget, input checks."""

from __future__ import annotations

import pytest
import torch

from bertapprox_hf import BertApproxConfig, BertApproxModel


def trained_looking_model(vocab_size: int = 50, dim: int = 24, **overrides) -> BertApproxModel:
    """A small model whose weights are all random (as after training), not at their identity init."""
    torch.manual_seed(0)
    config = BertApproxConfig(vocab_size=vocab_size, embedding_dim=dim, num_heads=4, intermediate_size=32, **overrides)
    model = BertApproxModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.3)
    return model


@pytest.mark.parametrize(("rounds", "context_layers"), [(1, 0), (2, 0), (2, 1)])
def test_output_is_invariant_to_permutation_and_padding(rounds, context_layers):
    model = trained_looking_model(entry_adapter_rank=3, pooling_rounds=rounds, context_layers=context_layers)
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    base = model(input_ids=ids, attention_mask=mask).pooler_output
    permuted = ids[:, torch.randperm(9)]
    assert torch.allclose(model(input_ids=permuted, attention_mask=mask).pooler_output, base, atol=1e-5)
    padded = torch.cat([ids, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    assert torch.allclose(model(input_ids=padded, attention_mask=padded_mask).pooler_output, base, atol=1e-5)
    # padding slots holding real ids are ignored too: only the mask counts
    noisy = torch.cat([ids, torch.randint(1, 50, (3, 7))], dim=1)
    assert torch.allclose(model(input_ids=noisy, attention_mask=padded_mask).pooler_output, base, atol=1e-5)


def test_duplicates_count_in_the_bag():
    model = trained_looking_model()
    once = model(input_ids=torch.tensor([[3, 4]])).pooler_output
    twice = model(input_ids=torch.tensor([[3, 3, 4]])).pooler_output
    assert not torch.allclose(once, twice)


@pytest.mark.parametrize("normalize", [False, True])
def test_the_empty_bag_is_finite(normalize):
    model = trained_looking_model(normalize=normalize)
    out = model(input_ids=torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.zeros(2, 4, dtype=torch.long))
    assert torch.isfinite(out.pooler_output).all()
    # the empty bag is the embedding of a zero pooled vector, whatever the padding width
    other = model(input_ids=torch.zeros(1, 1, dtype=torch.long), attention_mask=torch.zeros(1, 1, dtype=torch.long))
    assert torch.allclose(out.pooler_output[0], other.pooler_output[0])


def test_normalize_gives_unit_vectors():
    model = trained_looking_model(normalize=True)
    out = model(input_ids=torch.randint(1, 50, (4, 6))).pooler_output
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("adapter_rank", [0, 4])
def test_an_untrained_model_is_the_mean_of_its_entries(adapter_rank):
    config = BertApproxConfig(
        vocab_size=20, embedding_dim=16, num_heads=4, intermediate_size=32, entry_adapter_rank=adapter_rank
    )
    model = BertApproxModel(config)
    torch.manual_seed(1)
    with torch.no_grad():
        model.entry_table.weight.normal_()
    out = model(input_ids=torch.tensor([[2, 5, 7]])).pooler_output[0]
    assert torch.allclose(out, model.entry_table.weight[[2, 5, 7]].mean(0), atol=1e-5)


def test_a_pooling_round_at_its_zero_init_repeats_the_first():
    one = trained_looking_model()
    two = trained_looking_model(pooling_rounds=2)
    two.load_state_dict(one.state_dict(), strict=False)  # all but the new round, which stays at zero init
    torch.nn.init.zeros_(two.pooling.context_queries[0].proj.weight)
    ids = torch.randint(1, 50, (4, 11))
    torch.testing.assert_close(two(input_ids=ids).pooler_output, one(input_ids=ids).pooler_output)
    with torch.no_grad():
        two.pooling.context_queries[0].proj.weight.normal_(0, 0.3)
    assert not torch.allclose(two(input_ids=ids).pooler_output, one(input_ids=ids).pooler_output, atol=1e-3)
    fresh = BertApproxModel(BertApproxConfig(vocab_size=50, embedding_dim=24, num_heads=4, pooling_rounds=3))
    assert [q.proj.weight.abs().sum().item() for q in fresh.pooling.context_queries] == [0.0, 0.0]
    # a third round at zero repeats the (trained) second one, not the first
    three = trained_looking_model(pooling_rounds=3)
    three.load_state_dict(two.state_dict(), strict=False)
    torch.nn.init.zeros_(three.pooling.context_queries[1].proj.weight)
    torch.testing.assert_close(three(input_ids=ids).pooler_output, two(input_ids=ids).pooler_output)


def test_a_context_block_starts_as_the_model_without_it_and_lets_entries_interact():
    plain = trained_looking_model(pooling_rounds=2)
    with_block = trained_looking_model(pooling_rounds=2, context_layers=1)
    with_block.load_state_dict(plain.state_dict(), strict=False)
    torch.nn.init.zeros_(with_block.context_blocks[0].down.weight)  # its zero init
    torch.nn.init.zeros_(with_block.context_blocks[0].down.bias)
    ids = torch.randint(1, 50, (4, 11))
    torch.testing.assert_close(with_block(input_ids=ids).pooler_output, plain(input_ids=ids).pooler_output)
    fresh = BertApproxModel(BertApproxConfig(vocab_size=50, embedding_dim=24, num_heads=4, context_layers=2))
    assert all(block.down.weight.abs().sum().item() == 0.0 for block in fresh.context_blocks)
    # trained, an entry's contribution depends on the rest of its bag: not a sum of per-entry terms
    trained = trained_looking_model(context_layers=1)
    plain_one = trained_looking_model()
    plain_one.load_state_dict(trained.state_dict(), strict=False)
    a, b = torch.tensor([[3, 4, 5]]), torch.tensor([[3, 4, 6]])
    differences = [
        model(input_ids=a, output_entry_states=True).last_hidden_state[0, :2]
        - model(input_ids=b, output_entry_states=True).last_hidden_state[0, :2]
        for model in (trained, plain_one)
    ]
    assert differences[0].abs().max() > 1e-3  # φ of entries 3 and 4 changed with their neighbour
    assert differences[1].abs().max() == 0.0  # without the block φ is per entry


def test_default_parameter_count_for_a_768d_teacher_is_1_to_5_million():
    config = BertApproxConfig(vocab_size=60000, embedding_dim=768)
    model = BertApproxModel(config)
    trainable = model.num_parameters(only_trainable=True)
    print(f"trainable parameters at the defaults (768-d, 60k entries): {trainable:,}")
    assert 1_000_000 <= trainable <= 5_000_000
    assert not model.entry_table.weight.requires_grad
    assert model.num_parameters() - trainable == 60000 * 768


def test_gradients_reach_every_trainable_parameter():
    model = trained_looking_model(entry_adapter_rank=4, pooling_rounds=2, context_layers=1).train()
    out = model(input_ids=torch.randint(1, 50, (4, 6))).pooler_output
    out.pow(2).sum().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_inputs_get_clear_errors():
    model = trained_looking_model()
    with pytest.raises(ValueError, match="vocabulary size"):
        model(input_ids=torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(input_ids=torch.tensor([[1, 2]]), attention_mask=torch.tensor([[1, 1, 1]]))
    with pytest.raises(ValueError, match=r"\[batch, bag\]"):
        model(input_ids=torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids must be a tensor"):
        model(input_ids=[[1, 2]])
    with pytest.raises(TypeError, match="attention_mask must be a tensor"):
        model(input_ids=torch.tensor([[1, 2]]), attention_mask=[[1, 1]])
    with pytest.raises(TypeError, match="integer entry ids"):
        model(input_ids=torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1 \\(entry\\) only"):
        model(input_ids=torch.tensor([[1, 2]]), attention_mask=torch.tensor([[1, 2]]))
    boolean = model(input_ids=torch.tensor([[1, 2]]), attention_mask=torch.tensor([[True, False]])).pooler_output
    torch.testing.assert_close(boolean, model(input_ids=torch.tensor([[1]])).pooler_output)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "divisible"),
        ({"similarity": "l2"}, "similarity"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"dropout": 1.5}, "dropout"),
        ({"pooling_rounds": 0}, "pooling_rounds"),
        ({"context_layers": -1}, "context_layers"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BertApproxConfig(**kwargs)


def test_pairs_start_at_zero_then_add_the_order_of_the_entries():
    plain = trained_looking_model()
    paired = trained_looking_model(pair_rank=6)
    fresh = BertApproxModel(BertApproxConfig(vocab_size=50, embedding_dim=24, num_heads=4, pair_rank=6)).pairs
    assert fresh.up.weight.abs().sum() == 0 and fresh.left.weight.std() > 0.05  # zero map, drawn features
    paired.load_state_dict(plain.state_dict(), strict=False)  # the same model plus pairs
    with torch.no_grad():
        paired.pairs.up.weight.zero_()  # as at the start
        paired.entry_is_skipgram[40:] = True  # ids 40-49 play skip-grams
    ids = torch.tensor([[5, 41, 7, 9, 44, 12], [3, 8, 0, 0, 0, 0], [6, 0, 0, 0, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        torch.testing.assert_close(paired(ids, mask).pooler_output, plain(ids, mask).pooler_output)
        paired.pairs.up.weight.normal_(0, 0.3)
        base = paired(ids, mask).pooler_output
        swapped = paired(ids[:, [0, 1, 3, 2, 4, 5]], mask).pooler_output  # 7 and 9 change places
        assert not torch.allclose(swapped[0], base[0], atol=1e-4)
        torch.testing.assert_close(swapped[1:], base[1:])  # padding moved within padding
        # skip-grams are not in pairs: where they sit does not matter; nor does padding, nor ids under it
        moved = paired(ids[:, [1, 0, 2, 4, 3, 5]], mask).pooler_output
        torch.testing.assert_close(moved[0], base[0])
        noisy = torch.where(mask.bool(), ids, torch.randint(1, 50, ids.shape))
        torch.testing.assert_close(paired(noisy, mask).pooler_output, base)
        reversed_pair = paired(torch.tensor([[8, 3]]), torch.ones(1, 2, dtype=torch.long)).pooler_output
        assert not torch.allclose(reversed_pair[0], base[1], atol=1e-4)  # (3, 8) is not (8, 3)
        single = paired(torch.tensor([[6]]), torch.ones(1, 1, dtype=torch.long)).pooler_output
        torch.testing.assert_close(single[0], plain(ids[2:], mask[2:]).pooler_output[0])  # no pair: no term


def test_consecutive_pairs_are_the_bag_without_skipgrams_in_order():
    from bertapprox_hf.model.pooling_bertapprox import consecutive_pairs

    ids = torch.tensor([[4, 45, 6, 7, 46, 0], [9, 0, 0, 0, 0, 0]])
    is_skipgram = torch.zeros(50, dtype=torch.bool)
    is_skipgram[45:] = True
    left, right, mask = consecutive_pairs((ids > 0) & ~is_skipgram[ids])
    pairs = [
        [(int(ids[row, a]), int(ids[row, b])) for a, b, m in zip(left[row], right[row], mask[row], strict=True) if m]
        for row in range(2)
    ]
    assert pairs == [[(4, 6), (6, 7)], []]
