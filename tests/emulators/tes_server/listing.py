"""ListTasks query parsing as each profile does it: tag filters, page size."""

from collections.abc import Sequence

from .validate import ApiError, require

Query = Sequence[tuple[str, str]]


def zipped_tags(query: Query) -> dict[str, str]:
    """The TES v1.1 OpenAPI's tag_key: "an array of key values ... zipped with an optional
    tag_value array": the i-th tag_key takes the i-th tag_value wherever each stands in the
    query, a key without a value gets "" (any value). Funnel does the same (tes/extra_methods.go
    ListTasksRequest.GetTags; surplus values are dropped there)."""
    keys = [v for k, v in query if k == "tag_key"]
    values = [v for k, v in query if k == "tag_value"]
    # guess: the spec defines no tag_value without its key; refused rather than dropped
    require(len(values) <= len(keys), "more tag_value than tag_key parameters")
    require(len(set(keys)) == len(keys), "Duplicated tag_key")
    return {key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}


def funnel_tags(query: Query) -> dict[str, str]:
    """Funnel's GetTags zips the arrays; surplus tag_value entries are ignored, a repeated key
    keeps its last value (a Go map)."""
    keys = [v for k, v in query if k == "tag_key"]
    values = [v for k, v in query if k == "tag_value"]
    return {key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}


def azure_tags(query: Query) -> dict[str, str]:
    """TES on Azure (TaskServiceApi.cs ListTasksAsync, ParseZippedTagsFromQuery): by position,
    each tag_value belongs to the tag_key just before it; when that fails ("Unmatched tag_value")
    and there are no more values than keys, the arrays are zipped instead ("backup method");
    a tag_value without any tag_key, or a duplicated key, is refused."""
    keys = [v for k, v in query if k == "tag_key"]
    values = [v for k, v in query if k == "tag_value"]
    require(
        bool(keys) or not values,
        "Invalid tag_value parameter value. Only valid with paired tag_key parameter values.",
    )
    pairs: list[list[str | None]] = []
    positional = True
    for name, value in query:
        if name == "tag_key":
            pairs.append([value, None])
        elif name == "tag_value":
            if not pairs or pairs[-1][1] is not None:
                positional = False
                break
            pairs[-1][1] = value
    if not positional:
        require(len(keys) >= len(values), "Unmatched tag_value")
        pairs = [[key, values[i] if i < len(values) else ""] for i, key in enumerate(keys)]
    require(len({p[0] for p in pairs}) == len(pairs), "Duplicated tag_key")
    return {str(key): value or "" for key, value in pairs}


def tags_match(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    """The OpenAPI's table: every key present; a non-empty value must match exactly (Funnel
    boltdb ListTasks; TES on Azure: `tags ? key` or `tags->>key = value`)."""
    return all(key in tags and (value == "" or tags[key] == value) for key, value in wanted.items())


def bounded_page_size(raw: str) -> int:
    """The OpenAPI: "Must be less than 2048. Defaults to 256." Out of range refused as TES on
    Azure does ("pageSize must be greater than 0 and less than 2048")."""
    size = _integer(raw, 256)
    require(0 < size < 2048, "page_size must be between 1 and 2047")
    return size


def clamped_page_size(raw: str) -> int:
    """Funnel (tes/utils.go GetPageSize): 0 or less is 256, more than 2048 is 2048."""
    size = _integer(raw, 256)
    return 256 if size <= 0 else min(size, 2048)


def any_page_size(raw: str) -> int:
    """TESK passes page_size to Kubernetes as the list limit (KubernetesClientWrapper.listJobs);
    guess: 0 or less means no limit there, modelled as every task."""
    size = _integer(raw, 0)
    return size if size > 0 else 1 << 30


def _integer(raw: str, default: int) -> int:
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ApiError(400, "page_size must be an integer") from None
