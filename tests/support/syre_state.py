"""What a ``Syre`` object holds of its own: every tensor reachable from its state (for the memory tests)."""
import torch


def syre_tensors(s):
    """Every tensor reachable from the Syre object's own state (not the model's or optimizer's)."""
    found, seen = [], set()
    # references to the user's objects; ``_cache`` holds the step's lists of the parameters and of the
    # store's own anchors, ``_one_call`` the one-call check over the same parameters and ``_cache``'s buckets
    # (references, checked by the callers to be those and nothing else)
    SKIP = ("_optimizer", "optimizer", "_model", "_handles", "info", "_cache", "_infos", "_mapping", "_one_call")

    def walk(obj, depth=0):
        if id(obj) in seen or depth > 6:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif type(obj).__module__.startswith("syre") and hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                if k not in SKIP:
                    walk(v, depth + 1)

    walk({k: v for k, v in vars(s).items() if k not in SKIP})
    return found
