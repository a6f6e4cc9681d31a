"""The `upload` resource of app.py: a temporary file renamed on finish, removed on abort."""

import hashlib
import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types
from wit_world.imports.log import Level, log


class Upload(exports.provider.Upload):
    def __init__(self, directory, name, operation_id, sidecar):
        self.directory = directory
        self.final = os.path.join(directory, name)
        self.temporary = os.path.join(directory, f".{name}.{operation_id}.partial")
        self.sidecar = sidecar
        self.hash = hashlib.sha256()
        self.size = 0
        self.done = False
        if os.path.exists(self.final):
            raise Err(types.Error_Denied(f"{self.final} already exists"))
        # A buffered writer writes whole chunks or raises: no short writes.
        self.file = open(self.temporary, "xb")

    def write(self, chunk):
        try:
            self.file.write(chunk)
        except OSError as error:
            raise Err(types.Error_Io(f"cannot write {self.temporary}: {error}"))
        self.hash.update(chunk)
        self.size += len(chunk)

    @classmethod
    def finish(cls, this):
        try:
            this.file.close()
            os.rename(this.temporary, this.final)
            this.done = True
            this.sidecar["size"] = this.size
            this.sidecar["sha256"] = this.hash.hexdigest()
            with open(this.final + ".json", "w") as sidecar:
                json.dump(this.sidecar, sidecar, indent=2)
        except OSError as error:
            try:
                this._clean_up()
            except OSError:
                pass
            raise Err(types.Error_Io(f"cannot complete {this.final}: {error}"))
        log(Level.INFO, f"stored {this.size} bytes in {this.final}")
        return types.EgressResult(location=this.final)

    @classmethod
    def abort(cls, this):
        # componentize-py runs no destructor when diagmon drops the handle, so this is where
        # the temporary file goes.
        try:
            this._clean_up()
        except OSError as error:
            raise Err(types.Error_Io(f"cannot remove {this.temporary}: {error}"))
        log(Level.DEBUG, f"aborted: removed {this.temporary}")

    def _clean_up(self):
        if not self.done:
            self.done = True
            self.file.close()
            os.remove(self.temporary)
