"""The model registry: a name -> constructor map filled by the ``@register_model`` decorator."""
import fnmatch

_MODEL_ENTRYPOINTS = {}
_MODEL_ALIASES = {}  # alias -> canonical name (timm's names for the same architectures)
_MODEL_HAS_PRETRAINED = set()


def register_model(fn):
    """Register a model constructor under its function name."""
    _MODEL_ENTRYPOINTS[fn.__name__] = fn
    return fn


def register_alias(alias, name):
    """Make ``alias`` build the same model as ``name`` (e.g. timm's ``res2net50d`` = ``res2net50_v1b``)."""
    _MODEL_ALIASES[alias] = name


def register_pretrained(name):
    _MODEL_HAS_PRETRAINED.add(name)


def resolve_name(name):
    """The canonical registered name for ``name`` or one of its aliases."""
    return _MODEL_ALIASES.get(name, name)


def is_model(name):
    return resolve_name(name) in _MODEL_ENTRYPOINTS


def model_entrypoint(name):
    return _MODEL_ENTRYPOINTS[resolve_name(name)]


def list_models(pattern=None, pretrained=False, include_aliases=True):
    """Sorted model names, optionally filtered by a shell-style ``pattern`` and by published weights."""
    names = set(_MODEL_ENTRYPOINTS)
    if include_aliases:
        names |= set(_MODEL_ALIASES)
    if pattern:
        names = {n for n in names if fnmatch.fnmatch(n, pattern)}
    if pretrained:
        names = {n for n in names if resolve_name(n) in _MODEL_HAS_PRETRAINED}
    return sorted(names)
