"""The celeb basis: names, tokens, orthonormality, mean, rank, cache."""

import torch
import pytest

from celebbasis_ext.adapter import fingerprint_tables
from celebbasis_ext.basis import compute_basis, joint_table, load_or_build_basis
from celebbasis_ext.clip_tokenizer import clip_tokenizer
from celebbasis_ext.errors import BadInput
from celebbasis_ext.names import DEFAULT_NAMES_FILE, read_names, tokenize_names


_TOKENIZER = []


def _tokenize(text):
    if not _TOKENIZER:
        _TOKENIZER.append(clip_tokenizer())
    return _TOKENIZER[0](text, add_special_tokens=False).input_ids


def test_shipped_names_are_many_unique_and_mostly_usable():
    names = read_names()
    raw = [line.split("\t")[0].strip() for line in DEFAULT_NAMES_FILE.read_text(encoding="utf-8").splitlines()
           if line.strip() and not line.startswith("#")]
    assert len(raw) == len({name.casefold() for name in raw}), "duplicate names in the shipped list"
    assert len(names) >= 700
    celebs = tokenize_names(names, _tokenize)
    used = [celeb for celeb in celebs if celeb.used]
    assert len(used) >= 400
    genders = {celeb.tags.get("gender") for celeb in used}
    assert genders == {"f", "m"}
    women = sum(celeb.tags.get("gender") == "f" for celeb in used) / len(used)
    assert 0.35 <= women <= 0.65
    regions = [celeb.tags.get("region") for celeb in used]
    assert max(regions.count(region) for region in set(regions)) / len(regions) <= 0.45


def test_name_tokens_match_clip():
    celebs = tokenize_names([("Tom Hanks", {}), ("Robert Downey", {}), ("Cher", {})], _tokenize)
    assert celebs[0].tokens == ((2435,), (29943,)) and celebs[0].used
    assert celebs[1].used is (len(celebs[1].tokens[1]) == 1)
    assert not celebs[2].used  # one word


def test_user_names_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("# mine\nTom Hanks\ntom hanks\nEmma Stone\tgender=f\n\n", encoding="utf-8")
    assert read_names(path) == [("Tom Hanks", {}), ("Emma Stone", {"gender": "f"})]
    with pytest.raises(BadInput, match="names file not found: .*missing.txt"):
        read_names(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(BadInput, match="names file .*empty.txt holds no names"):
        read_names(tmp_path / "empty.txt")


def test_basis_is_orthonormal_centred_and_reports_rank():
    torch.manual_seed(0)
    table = torch.randn(49408, 24)
    celebs = tokenize_names(read_names(), _tokenize)
    mean, vectors, rank = compute_basis(table, celebs, k=512)
    assert mean.shape == (2, 24) and vectors.shape == (2, 24, 24)  # K clipped to the width
    for position in range(2):
        gram = vectors[position] @ vectors[position].T
        assert torch.allclose(gram, torch.eye(24), atol=1e-4)
        ids = sorted({celeb.token_pair[position] for celeb in celebs if celeb.used})
        assert torch.allclose(mean[position], table[ids].mean(0), atol=1e-5)
    assert rank == (24, 24)


def test_k_beyond_rank_still_orthonormal():
    torch.manual_seed(1)
    table = torch.randn(49408, 64)
    celebs = tokenize_names([("Tom Hanks", {}), ("Emma Stone", {}), ("Brad Pitt", {}), ("Will Smith", {})], _tokenize)
    mean, vectors, rank = compute_basis(table, celebs, k=40)
    assert vectors.shape == (2, 40, 64)
    assert rank == (3, 3)  # four names, centred: rank 3
    gram = vectors[0] @ vectors[0].T
    assert torch.allclose(gram, torch.eye(40), atol=1e-4)


def test_cache_hit_and_fingerprint(tmp_path, sdxl_pipeline):
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter

    adapter = DiffusersAdapter(sdxl_pipeline)
    tables = adapter.token_embedding_tables()
    assert joint_table(tables).shape == (49408, 32 + 48)
    first = load_or_build_basis(tables, adapter.tokenize, adapter.fingerprint(), k=512, cache_dir=tmp_path)
    second = load_or_build_basis(tables, adapter.tokenize, adapter.fingerprint(), k=512, cache_dir=tmp_path)
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.vectors, second.vectors) and torch.equal(first.mean, second.mean)
    assert first.rank == second.rank and first.width == 80
    changed = [tables[0].clone(), tables[1].clone()]
    changed[0][5, 0] += 1.0
    assert fingerprint_tables(changed) != adapter.fingerprint()


def test_embed_and_project_roundtrip():
    torch.manual_seed(2)
    table = torch.randn(49408, 32)
    mean, vectors, rank = compute_basis(table, tokenize_names(read_names(), _tokenize), k=16)
    from celebbasis_ext.basis import CelebBasis

    basis = CelebBasis(mean, vectors, rank, 0, 0, "x")
    coefficients = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    embedding = basis.embed(coefficients)
    assert torch.allclose((embedding - mean).norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(basis.project(embedding), coefficients, atol=1e-5)
