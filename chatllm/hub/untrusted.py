"""What a Hub answers, checked before any of it names a file in the cache.

HF_ENDPOINT can point at any server, and three things it sends become parts
of cache paths: the commit (the listing's `sha`, the `X-Repo-Commit` header)
names the snapshot folder, a listed file name the link inside it, and an LFS
sha256 (when the ETag is not one) the blob. A commit of `../../..`, a file
name like `/home/me/.bashrc` or a sha256 of `../x` would lead a download,
a link or a deletion outside the cache. huggingface_hub refuses such values
with its own patterns and checks; these functions apply them (and a few
stricter rules) and turn a refusal into one line naming the Hub that sent it.

huggingface_hub is imported by the functions: listing the cache and shell
completion never need it.
"""

from __future__ import annotations

from typing import TypeGuard

from chatllm.errors import DownloadError
from chatllm.hub.environment import hub_description

_SHOWN_CHARACTERS = 100

COMMIT_RULE = "a commit is 40 lower-case hex characters"
FILE_NAME_RULE = (
    "a file name is a relative path of '/'-separated parts, without '..', '.' or empty parts, "
    "backslashes, control characters, or an absolute or drive prefix"
)
SHA256_RULE = "a sha256 is 64 lower-case hex characters"


def is_sha256(value: object) -> TypeGuard[str]:
    from huggingface_hub.file_download import REGEX_SHA256

    return isinstance(value, str) and REGEX_SHA256.fullmatch(value) is not None


def checked_commit(commit: object, repo: str) -> str:
    """`commit` when it is a commit hash; DownloadError otherwise."""
    from huggingface_hub.file_download import REGEX_COMMIT_HASH

    if isinstance(commit, str) and REGEX_COMMIT_HASH.fullmatch(commit):
        return commit
    raise _refused("commit", commit, repo, COMMIT_RULE)


def checked_file_name(name: object, repo: str) -> str:
    """`name` when it is a plain relative path inside the repo; DownloadError otherwise."""
    from huggingface_hub._local_folder import _validate_relative_filename

    if not isinstance(name, str) or not name:
        raise _refused("file name", name, repo, FILE_NAME_RULE)
    unsafe = (
        "\\" in name
        or any(ord(character) < 0x20 or ord(character) == 0x7F for character in name)
        or any(part in ("", ".") for part in name.split("/"))
    )
    try:
        _validate_relative_filename(name)  # '..' anywhere; absolute, drive and UNC paths
    except ValueError:
        unsafe = True
    if unsafe:
        raise _refused("file name", name, repo, FILE_NAME_RULE)
    return name


def checked_sha256(sha256: object, repo: str, path: str) -> str:
    """`sha256` when it is one; DownloadError otherwise."""
    if is_sha256(sha256):
        return sha256
    raise _refused(f"sha256 (of {path})", sha256, repo, SHA256_RULE)


def _refused(what: str, value: object, repo: str, rule: str) -> DownloadError:
    return DownloadError(
        f"{hub_description()} sent the {what} {_shown(value)} for {repo}, which is not safe to use as a path "
        f"({rule}); nothing was downloaded"
    )


def _shown(value: object) -> str:
    """`value` quoted with its control characters escaped (a name may hold a
    terminal escape), cut short if long."""
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else str(value)
    if len(text) > _SHOWN_CHARACTERS:
        return repr(text[:_SHOWN_CHARACTERS]) + "…"
    return repr(text)
