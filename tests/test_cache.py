from unirt import cache_dir


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "c"))
    path = cache_dir("conversions", "mnn")
    assert path == tmp_path / "c" / "conversions" / "mnn" and path.is_dir()


def test_cache_dir_defaults_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIRT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "unirt"
