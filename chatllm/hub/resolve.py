"""Hub models: turn an alias or `org/repo[:QUANT|/file]` into a verified local
GGUF file, downloading it when allowed.

A model already in the Hugging Face cache is used without any network call
(so offline use has no delay); only `pull` asks the Hub for what is new. Every
file is checked against the sha256 the Hub gave for it before its first use.
The cache layout, resume and verification live in chatllm.hub.cache and
chatllm.hub.download; this module talks to the Hub API and decides.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chatllm import __version__
from chatllm.errors import ChatLLMError, DownloadError, ModelError
from chatllm.hub import catalog
from chatllm.hub.cache import (
    CachedModel,
    CacheEscapeError,
    file_sha256,
    find_cached_model,
    forget_verified,
    is_verified,
    is_within_cache,
    mark_verified,
)
from chatllm.hub.cache import cached_model_references as _cached_references
from chatllm.hub.download import RemoteFile, SilentProgress, fetch_file, format_bytes
from chatllm.hub.environment import hub_endpoint, is_offline, metadata_timeout_s
from chatllm.hub.files import (
    HubReference,
    ModelVariant,
    RepoFile,
    choose_variant,
    group_variants,
    normalize_quant,
    parse_hub_reference,
)
from chatllm.hub.references import ResolvedModel
from chatllm.hub.untrusted import checked_commit, checked_file_name, checked_sha256, is_sha256

if TYPE_CHECKING:
    from chatllm.hub.download import RemoteFile, TransferProgress
    from chatllm.hub.references import ResolvedModel


@dataclass(frozen=True)
class ModelTarget:
    """What a reference asks for: a Hub reference, reached through an alias or not."""

    reference: str  # as the user wrote it
    hub: HubReference
    alias: str | None = None


@dataclass(frozen=True)
class PullPlan:
    """The files a pull needs, with the Hub's metadata for each shard."""

    target: ModelTarget
    variant: ModelVariant
    files: tuple[RemoteFile, ...]

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return sum(size for size in sizes if size is not None) if None not in sizes else None


@dataclass(frozen=True)
class PullResult:
    model: CachedModel
    downloaded: bool  # False when everything was already in the cache


def parse_model_reference(reference: str, *, quant: str | None = None) -> ModelTarget:
    """A catalog alias or a Hub reference; `quant` overrides the quantization.
    Raises ModelError (with a did-you-mean for near-miss aliases)."""
    entry = catalog.find_alias(reference)
    try:
        hub = parse_hub_reference(entry.hub_reference if entry else reference)
    except ModelError:
        close = difflib.get_close_matches(reference.lower(), catalog.alias_names(), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else "; see `chatllm models catalog` for aliases"
        raise ModelError(
            f"model '{reference}' not found: it is not a .gguf file, a catalog alias or a Hub repo (org/repo){hint}"
        ) from None
    if quant:
        if hub.filename:
            raise ModelError(f"'{reference}' names a file; --quant cannot change it")
        hub = replace(hub, quant=normalize_quant(quant))
    return ModelTarget(reference=reference, hub=hub, alias=entry.alias if entry else None)


@dataclass(frozen=True)
class Interaction:
    """How the hub talks to the person running chatllm; the CLI fills it in
    (this module never prints or asks). Without one, nothing is asked or shown."""

    # Asks a yes/no question, or None where nobody can answer (a pipe, a script).
    confirm: Callable[[str], bool] | None = None
    progress: TransferProgress | None = None
    notify: Callable[[str], None] = lambda message: None


def resolve_hub_model(reference: str, *, allow_download: bool, interaction: Interaction | None = None) -> ResolvedModel:
    """The local, verified GGUF for `reference` (first shard of a split model).
    Cached models need no network. A missing model is downloaded when
    `allow_download`; otherwise `interaction.confirm` is asked, and without it a
    ModelError points at `--pull` and `chatllm models pull`."""
    interaction = interaction or Interaction()
    target = parse_model_reference(reference)
    model = find_cached_model(target.hub)
    if model is not None:
        verify_cached_model(model, reference, interaction.notify)
    elif is_offline():
        raise ModelError(
            f"model '{reference}' is not downloaded and HF_HUB_OFFLINE is set; "
            f"run `chatllm models pull {reference}` while online (downloaded models: `chatllm models list`)"
        )
    elif allow_download:
        model = run_pull(plan_pull(target), interaction.progress).model
    elif interaction.confirm is None:
        raise ModelError(
            f"model '{reference}' is not downloaded yet; add --pull to download it, "
            f"or run `chatllm models pull {reference}` first"
        )
    else:
        plan = plan_pull(target)
        if not interaction.confirm(f"Download {describe_plan(plan)} from {hub_endpoint()}?"):
            raise ModelError(f"model '{reference}' is not downloaded; nothing was run")
        model = run_pull(plan, interaction.progress).model
    return ResolvedModel(reference=reference, name=model.path.name, path=model.path)


def pull_model(
    reference: str,
    *,
    quant: str | None = None,
    progress: TransferProgress | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> PullResult:
    """Download (or update, or just verify) the model `reference` selects.
    Offline, a cached model is returned as is; a missing one is a ModelError."""
    target = parse_model_reference(reference, quant=quant)
    if is_offline():
        model = find_cached_model(target.hub)
        if model is None:
            raise ModelError(f"cannot download '{reference}': HF_HUB_OFFLINE is set; unset it to download")
        verify_cached_model(model, reference, notify)
        return PullResult(model=model, downloaded=False)
    return run_pull(plan_pull(target), progress)


def plan_pull(target: ModelTarget) -> PullPlan:
    """Ask the Hub which files `target` needs: list the repo, choose the
    variant, and read each shard's sha256 (ETag) and size."""
    commit, files = list_repo_files(target.hub.repo)
    variant = choose_variant(group_variants(files), target.hub)
    return PullPlan(
        target=target, variant=variant, files=tuple(_remote_file(target.hub.repo, commit, f) for f in variant.files)
    )


def run_pull(plan: PullPlan, progress: TransferProgress | None = None) -> PullResult:
    """Fetch every shard of the plan (each resumable, locked, verified);
    `progress` hears of each file's bytes (None: nobody watches)."""
    progress = progress or SilentProgress()
    headers = _hub_headers()
    downloaded = False
    for remote in plan.files:
        try:
            downloaded |= fetch_file(remote, headers=headers, progress=progress)
        except ChatLLMError:
            raise
        except Exception as error:  # HTTP errors from the file server
            raise _hub_error(error, remote.repo, remote.path) from None
    model = find_cached_model(HubReference(plan.target.hub.repo, filename=plan.variant.first.path))
    if model is None:  # the files were just linked: only a concurrent `rm` gets here
        raise DownloadError(f"{plan.variant.first.path} disappeared from the cache while it was being downloaded")
    return PullResult(model=model, downloaded=downloaded)


def list_repo_files(repo: str) -> tuple[str | None, list[RepoFile]]:
    """(commit, files) of the repo's main branch, from the Hub API. The commit
    is checked (it may name a folder); file names and sha256s are checked
    where one is used (`_remote_file`)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), library_name="chatllm", library_version=_version())
    try:
        info = api.model_info(repo, files_metadata=True, timeout=metadata_timeout_s())
    except Exception as error:
        raise _hub_error(error, repo) from None
    files = [
        RepoFile(path=s.rfilename, size=(s.lfs.size if s.lfs else s.size), sha256=(s.lfs.sha256 if s.lfs else None))
        for s in info.siblings or []
    ]
    return (checked_commit(info.sha, repo) if info.sha is not None else None), files


def verify_cached_model(
    model: CachedModel, reference: str, notify: Callable[[str], None] = lambda message: None
) -> None:
    """Hash shards not yet verified against the sha256 their blob is named
    after (saying so through `notify`: it takes a while); delete a mismatching
    one and raise DownloadError. A link that leads out of the cache is never
    opened nor deleted: CacheEscapeError."""
    for path, shard in zip(model.paths, model.variant.files):
        if not is_within_cache(path):
            raise CacheEscapeError(
                f"the cache entry {path} leads outside the Hugging Face cache (to {path.resolve()}); "
                f"chatllm does not use it: remove the entry with `chatllm models rm {reference}`"
            )
        if shard.sha256 is None:
            continue  # a copied (not linked) cache entry: no sha256 to check against
        blob = path.resolve()
        if is_verified(blob):
            continue
        notify(f"Checking {shard.path} (sha256, once)…")
        if file_sha256(blob) != shard.sha256:
            forget_verified(blob)
            blob.unlink(missing_ok=True)
            raise DownloadError(
                f"{shard.path} in the cache does not match its sha256 and was deleted; "
                f"run `chatllm models pull {reference}` to download it again"
            )
        mark_verified(blob)


def find_local_model(reference: str) -> CachedModel | None:
    """The cached model `reference` selects, without any network call."""
    return find_cached_model(parse_model_reference(reference).hub)


def describe_plan(plan: PullPlan) -> str:
    size = f", {format_bytes(plan.size)}" if plan.size is not None else ""
    shards = f", {len(plan.files)} files" if len(plan.files) > 1 else ""
    return f"{plan.target.hub.repo}/{plan.variant.first.path} ({plan.variant.quant or 'GGUF'}{size}{shards})"


def cached_model_references() -> list[str]:
    """`org/repo:QUANT` of every cached GGUF model; cheap, for shell completion."""
    return _cached_references()


def _remote_file(repo: str, commit: str | None, listed: RepoFile) -> RemoteFile:
    """What the Hub says of one listed file (HEAD), each value that becomes a
    path checked (chatllm.hub.untrusted) before anything is written."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    path = checked_file_name(listed.path, repo)
    url = hf_hub_url(repo, path, revision=commit, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(
            url,
            timeout=metadata_timeout_s(),
            library_name="chatllm",
            library_version=_version(),
            endpoint=hub_endpoint(),
        )
    except Exception as error:
        raise _hub_error(error, repo, listed.path) from None
    if is_sha256(meta.etag):
        sha256 = meta.etag
    elif listed.sha256 is None:
        raise DownloadError(
            f"the Hub gave no sha256 for {repo}/{path} (it is not stored with Git LFS), so it cannot be verified"
        )
    else:
        sha256 = checked_sha256(listed.sha256, repo, path)
    return RemoteFile(
        repo=repo,
        path=path,
        commit=checked_commit(meta.commit_hash or commit, repo),
        url=meta.location,
        sha256=sha256,
        size=meta.size if meta.size is not None else listed.size,
    )


def _hub_error(error: Exception, repo: str, path: str | None = None) -> Exception:
    """A one-line ChatLLMError for what huggingface_hub or the network raised."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, HFValidationError):
        return ModelError(f"'{repo}' is not a valid Hub repo name (org/name: letters, digits, '-', '_', '.')")
    if isinstance(error, GatedRepoError):
        return ModelError(
            f"{repo} is gated: accept its terms at {hub_endpoint()}/{repo} and set HF_TOKEN to a token with access"
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelError(f"repo '{repo}' not found on {hub_endpoint()} (if it is private, set HF_TOKEN)")
    if isinstance(error, (RemoteEntryNotFoundError, RevisionNotFoundError)):
        return ModelError(f"{repo} has no file '{path}' on its main branch")
    if isinstance(error, (httpx2.TransportError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        reason = (str(error) or type(error).__name__).splitlines()[0]
        return DownloadError(
            f"cannot reach the Hugging Face Hub at {hub_endpoint()} ({reason}); check the network, "
            "or use a downloaded model (`chatllm models list`)"
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "an error"
        return DownloadError(f"the Hub answered {status} for {repo}{'/' + path if path else ''}; try again later")
    return error


def _hub_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(library_name="chatllm", library_version=_version())


def _version() -> str:
    return __version__
