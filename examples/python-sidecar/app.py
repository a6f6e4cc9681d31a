"""An example egress provider in Python: stores each artifact in the granted directory, next to
a JSON "sidecar" file with what diagmon knows about it and the artifact's sha256.

Build it (from this folder; componentize-py comes from PyPI):

    componentize-py -d ../../wit/diagmon-egress@0.1.0 -w egress-provider componentize app -o python_sidecar.wasm

Configure it in diagmon (`directory` grants the folder; the `directory` setting tells the
provider where it is, and must name the same folder):

    [egress.providers.sidecar]
    component = "examples/python-sidecar/python_sidecar.wasm"
    directory = "/var/lib/diagmon/traces"
    settings = { directory = "/var/lib/diagmon/traces" }

The class for the exported `upload` resource lives in `provider.py`, a module named after the
exported interface, as componentize-py requires.
"""

import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types
from wit_world.imports.log import Level, log

import provider

SETTINGS = {}


class Provider(exports.Provider):
    def configure(self, settings):
        known = {"directory"}
        for key, value in settings:
            if key not in known:
                raise Err(types.Error_InvalidSettings(
                    f"unknown setting `{key}`; this provider knows `directory`"))
            SETTINGS[key] = value
        directory = SETTINGS.get("directory")
        if not directory:
            raise Err(types.Error_InvalidSettings(
                "`directory` is required: the granted directory's path"))
        if not os.path.isdir(directory):
            raise Err(types.Error_InvalidSettings(
                f"`{directory}` is not a directory this provider can see; "
                "grant it with `directory` and give the same path here"))

    def begin(self, artifact):
        directory = SETTINGS["directory"]
        name = artifact.file_name.replace("/", "_")
        sidecar = {
            "file_name": name,
            "content_type": artifact.content_type,
            "kind": artifact.kind,
            "pid": artifact.pid,
            "uid": artifact.uid,
            "process_name": artifact.process_name,
            "operation_id": artifact.operation_id,
            "tags": list(artifact.tags),
            "started_at": artifact.started_at.seconds
            + artifact.started_at.nanoseconds / 1e9,
        }
        try:
            return provider.Upload(directory, name, artifact.operation_id, sidecar)
        except OSError as error:
            raise Err(types.Error_Io(f"cannot create a file in {directory}: {error}"))
