// An egress provider for diagmon in JavaScript (componentize-js): stores each artifact in the
// object store its configuration grants (`object_store = { url = ... }`), as
// `{prefix}{file_name}`. Small artifacts go up in one `put`; larger ones in a multipart upload,
// so that nothing appears under the name until `finish`.
//
// Settings (`[egress.providers.NAME.settings]`):
//   prefix = "traces/"   a path prefix inside the granted store (optional)
//
// The world is `object-storage-provider` (the contract in wit/): `log` and `object-store` are imported,
// `provider` exported. A `result` is returned by returning its value and refused by throwing
// the error variant, `{ tag: "invalid-settings", val: "..." }`.

import { log } from "diagmon:egress/log@0.1.0";
import { describe, put, beginMultipart, MultipartUpload } from "diagmon:egress/object-store@0.1.0";

// Parts of a multipart upload: at least 5 MiB each (every part but the last).
const PART_BYTES = 8 * 1024 * 1024;
// Parts uploading at once (the host's memory for this upload is this many parts).
const PARTS_IN_FLIGHT = 2;

// What `configure` accepted. One instance serves one artifact: nothing else lasts.
let prefix = "";

function refuse(tag, message) {
  return { tag, val: message };
}

// A store error (a variant with the store's own words) as the provider's error, keeping them.
function storeError(action, error) {
  const payload = error && error.payload !== undefined ? error.payload : error;
  if (payload && typeof payload === "object" && "tag" in payload) {
    const words = payload.tag.replace(/-/g, " ");
    const tag = payload.tag === "credentials-rejected" ? "denied"
      : payload.tag === "unreachable" || payload.tag === "timed-out" ? "unavailable"
      : payload.tag === "invalid-argument" ? "invalid-settings"
      : "io";
    return refuse(tag, `${action} in ${describe()}: ${words}: ${payload.val}`);
  }
  return refuse("other", `${action} in ${describe()}: ${error}`);
}

// `prefix` as a path prefix ending in "/" ("" for none); refused unless it is relative and clean.
function checkPrefix(value) {
  if (value === "") {
    return value;
  }
  const trimmed = value.endsWith("/") ? value.slice(0, -1) : value;
  if (value.startsWith("/") || trimmed.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw refuse("invalid-settings",
      `\`prefix\` must be a relative path like "traces/" (no leading "/", no empty, "." or ".." segments), not ${JSON.stringify(value)}`);
  }
  return `${trimmed}/`;
}

class Upload {
  constructor(path, contentType) {
    this.path = path;
    this.contentType = contentType;
    this.pending = [];
    this.pendingBytes = 0;
    this.multipart = null;
    this.size = 0;
  }

  write(chunk) {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.size += chunk.length;
    if (this.pendingBytes >= PART_BYTES) {
      if (this.multipart === null) {
        try {
          this.multipart = beginMultipart(this.path, this.options(), PARTS_IN_FLIGHT);
        } catch (error) {
          throw storeError(`cannot start uploading ${this.path}`, error);
        }
      }
      this.sendPart();
    }
  }

  options() {
    return { contentType: this.contentType, metadata: [] };
  }

  // The buffered chunks as one array, and the buffer emptied.
  takePending() {
    const data = new Uint8Array(this.pendingBytes);
    let offset = 0;
    for (const chunk of this.pending) {
      data.set(chunk, offset);
      offset += chunk.length;
    }
    this.pending = [];
    this.pendingBytes = 0;
    return data;
  }

  sendPart() {
    try {
      this.multipart.putPart(this.takePending());
    } catch (error) {
      throw storeError(`cannot upload a part of ${this.path}`, error);
    }
  }

  static finish(upload) {
    let info;
    if (upload.multipart === null) {
      try {
        info = put(upload.path, upload.takePending(), upload.options());
      } catch (error) {
        throw storeError(`cannot store ${upload.path}`, error);
      }
    } else {
      if (upload.pendingBytes > 0) {
        upload.sendPart();
      }
      const multipart = upload.multipart;
      upload.multipart = null;
      try {
        info = MultipartUpload.complete(multipart);
      } catch (error) {
        throw storeError(`cannot complete ${upload.path}`, error);
      }
    }
    log("info", `stored ${upload.size} bytes at ${info.url}`);
    return { location: info.url };
  }

  static abort(upload) {
    upload.pending = [];
    if (upload.multipart !== null) {
      const multipart = upload.multipart;
      upload.multipart = null;
      try {
        MultipartUpload.abort(multipart);
      } catch (error) {
        throw storeError(`cannot discard the parts of ${upload.path}`, error);
      }
    }
  }
}

export const provider = {
  configure(settings) {
    let configured = "";
    for (const [key, value] of settings) {
      if (key === "prefix") {
        configured = checkPrefix(value);
      } else {
        throw refuse("invalid-settings", `unknown setting \`${key}\`; this provider knows \`prefix\``);
      }
    }
    prefix = configured;
  },

  begin(artifact) {
    return new Upload(`${prefix}${artifact.fileName}`, artifact.contentType);
  },

  Upload,
};
