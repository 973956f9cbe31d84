"""A small kustomize for tests without the binary: what `kustomize build` makes of deploy/k8s's
base, overlays and components, for the fields they use (resources, directories included;
components; labels; namespace; images; patches, strategic merge, ``$patch: delete`` of a whole
object, or JSON 6902). A kustomization using anything else is refused, so the tests never
check less than would be applied.
`make k8s-check` runs the real kustomize on the same trees and the tests check its output
instead."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "apiVersion",
    "kind",
    "labels",
    "resources",
    "components",
    "namespace",
    "images",
    "patches",
}
WORKLOADS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
Obj = dict[str, Any]


def build(root: Path) -> list[Obj]:
    """The objects of the kustomization in ``root``, transformed as kustomize would."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN
    assert not unknown, f"{root}: the test's renderer does not know {sorted(unknown)}; extend it"
    objects: list[Obj] = []
    for name in kustomization.get("resources", []):
        path = root / name
        if path.is_dir():
            objects += build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    # Components come after the resources and before this kustomization's own transformers.
    for name in kustomization.get("components", []):
        objects += build(root / name)
    for patch in kustomization.get("patches", []):
        _patch(objects, root, patch)
    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates"), entry
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _matches(obj: Obj, target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    return (
        target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _patch(objects: list[Obj], root: Path, patch: dict[str, Any]) -> None:
    text = patch["patch"] if "patch" in patch else (root / patch["path"]).read_text()
    body = yaml.safe_load(text)
    if isinstance(body, list):  # JSON 6902: a list of operations on the target
        target = patch["target"]
    else:  # strategic merge: the object it names, unless a target says otherwise
        target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
    hits = [obj for obj in objects if _matches(obj, target)]
    assert hits, f"patch {patch} matches no object"
    if isinstance(body, dict) and body.get("$patch") == "delete":  # the object goes
        assert set(body) == {"apiVersion", "kind", "metadata", "$patch"}, body
        objects[:] = [obj for obj in objects if not any(obj is hit for hit in hits)]
        return
    for obj in hits:
        if isinstance(body, list):
            for operation in body:
                _json6902(obj, operation)
        else:
            _merge(obj, copy.deepcopy(body))


def _json6902(obj: Obj, operation: dict[str, Any]) -> None:
    *parents, last = [
        p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]
    ]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, operation["value"])
        elif op == "replace":
            node[index] = operation["value"]
        elif op == "remove":
            del node[index]
        else:
            raise AssertionError(f"unsupported JSON patch operation {op}")
        return
    if op in ("replace", "remove"):
        assert last in node, f"{operation['path']}: no such field to {op}"
    if op == "remove":
        del node[last]
    elif op in ("add", "replace"):
        node[last] = operation["value"]
    else:
        raise AssertionError(f"unsupported JSON patch operation {op}")


def _merge(into: Any, patch: Any) -> Any:
    """Strategic merge as far as these manifests need: maps merge, lists of named maps merge by
    name, other lists and values are replaced."""
    if isinstance(into, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            into[key] = _merge(into[key], value) if key in into else value
        return into
    named = isinstance(into, list) and isinstance(patch, list)
    if named and all(isinstance(x, dict) and "name" in x for x in [*into, *patch]):
        by_name = {x["name"]: x for x in into}
        for item in patch:
            if item["name"] in by_name:
                _merge(by_name[item["name"]], item)
            else:
                into.append(item)
        return into
    return patch


def _set_image(obj: Obj, image: dict[str, str]) -> None:
    if obj["kind"] not in WORKLOADS:
        return
    spec = obj["spec"]["template"]["spec"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        name, tag = container["image"], ""
        head, _, tail = name.rpartition(":")
        if head and "/" not in tail:
            name, tag = head, tail
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        tag = image.get("newTag", tag)
        container["image"] = f"{name}:{tag}" if tag else name
