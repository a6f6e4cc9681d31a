// An egress provider for diagmon in C (wit-bindgen c, wasi-libc): stores each artifact in the
// directory its configuration grants (`directory = ...`), under the name diagmon suggests.
// Until `finish` the bytes are in `.{name}.{operation-id}.partial`, a name diagmon itself
// removes when an upload does not complete; `finish` renames it, `abort` removes it.
//
// Settings (`[egress.providers.NAME.settings]`):
//   overwrite = true    replace an artifact of the same name (default: refuse)
//
// The bindings (egress_provider.h) come from `wit-bindgen c` on the contract (build.sh). Their
// rules: arguments handed to an export belong to it (free them); strings returned to diagmon
// are malloc'd and freed by the bindings after the call.

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>

#include "egress_provider.h"

typedef exports_diagmon_egress_provider_error_t provider_error_t;

// `overwrite`, as `configure` accepted it. One instance serves one artifact: nothing else lasts.
static bool overwrite = false;

struct exports_diagmon_egress_provider_upload_t {
    int fd;          // the partial file, -1 once closed
    char *partial;   // its path
    char *final;     // the artifact's path
    uint64_t offset; // bytes written
};

// An error variant carrying a formatted message (malloc'd: the bindings free it after the
// call). Every case of the variant carries a string, so `val.other` stands for all of them.
static void set_error(provider_error_t *err, uint8_t tag, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *message = NULL;
    int length = vasprintf(&message, format, args);
    va_end(args);
    err->tag = tag;
    if (length < 0) {
        egress_provider_string_dup(&err->val.other, "out of memory");
    } else {
        err->val.other.ptr = (uint8_t *)message;
        err->val.other.len = (size_t)length;
    }
}

// A string argument as a NUL-terminated copy (the bindings' strings are not terminated).
static char *to_c_string(const egress_provider_string_t *s) {
    char *copy = malloc(s->len + 1);
    if (copy != NULL) {
        memcpy(copy, s->ptr, s->len);
        copy[s->len] = '\0';
    }
    return copy;
}

// The granted directory: the first preopen (diagmon grants at most one). NULL when none.
static char *granted_directory(void) {
    for (__wasi_fd_t fd = 3; fd < 64; fd++) {
        __wasi_prestat_t prestat;
        if (__wasi_fd_prestat_get(fd, &prestat) != __WASI_ERRNO_SUCCESS) {
            break;
        }
        if (prestat.tag != __WASI_PREOPENTYPE_DIR) {
            continue;
        }
        size_t length = prestat.u.dir.pr_name_len;
        char *name = malloc(length + 1);
        if (name == NULL) {
            return NULL;
        }
        if (__wasi_fd_prestat_dir_name(fd, (uint8_t *)name, length) != __WASI_ERRNO_SUCCESS) {
            free(name);
            return NULL;
        }
        name[length] = '\0';
        return name;
    }
    return NULL;
}

static bool no_directory(provider_error_t *err) {
    set_error(err, DIAGMON_EGRESS_TYPES_ERROR_INVALID_SETTINGS,
              "no directory is granted to this provider; set `directory` in its "
              "[egress.providers.<name>] table");
    return false;
}

bool exports_diagmon_egress_provider_configure(
    egress_provider_list_tuple2_string_string_t *settings, provider_error_t *err) {
    bool ok = true;
    bool configured_overwrite = false;
    for (size_t i = 0; ok && i < settings->len; i++) {
        char *key = to_c_string(&settings->ptr[i].f0);
        char *value = to_c_string(&settings->ptr[i].f1);
        if (key == NULL || value == NULL) {
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_OTHER, "out of memory");
            ok = false;
        } else if (strcmp(key, "overwrite") != 0) {
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_INVALID_SETTINGS,
                      "unknown setting `%s`; this provider knows `overwrite`", key);
            ok = false;
        } else if (strcmp(value, "true") == 0 || strcmp(value, "false") == 0) {
            configured_overwrite = strcmp(value, "true") == 0;
        } else {
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_INVALID_SETTINGS,
                      "`overwrite` must be true or false, not %s", value);
            ok = false;
        }
        free(key);
        free(value);
    }
    egress_provider_list_tuple2_string_string_free(settings);
    if (!ok) {
        return false;
    }
    // A missing grant stops diagmon at start-up rather than failing the first artifact.
    char *directory = granted_directory();
    if (directory == NULL) {
        return no_directory(err);
    }
    free(directory);
    overwrite = configured_overwrite;
    return true;
}

bool exports_diagmon_egress_provider_begin(
    exports_diagmon_egress_provider_artifact_t *artifact,
    exports_diagmon_egress_provider_own_upload_t *ret, provider_error_t *err) {
    char *directory = granted_directory();
    char *name = to_c_string(&artifact->file_name);
    char *operation = to_c_string(&artifact->operation_id);
    exports_diagmon_egress_provider_artifact_free(artifact);
    bool ok = false;
    char *final = NULL;
    char *partial = NULL;
    if (directory == NULL) {
        no_directory(err);
    } else if (name == NULL || operation == NULL ||
               asprintf(&final, "%s/%s", directory, name) < 0 ||
               asprintf(&partial, "%s/.%s.%s.partial", directory, name, operation) < 0) {
        set_error(err, DIAGMON_EGRESS_TYPES_ERROR_OTHER, "out of memory");
    } else if (!overwrite && access(final, F_OK) == 0) {
        set_error(err, DIAGMON_EGRESS_TYPES_ERROR_DENIED,
                  "%s already exists; remove it or set `overwrite = true`", final);
    } else {
        int fd = open(partial, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) {
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_IO, "cannot create %s: %s", partial,
                      strerror(errno));
        } else {
            exports_diagmon_egress_provider_upload_t *upload = malloc(sizeof *upload);
            if (upload == NULL) {
                close(fd);
                unlink(partial);
                set_error(err, DIAGMON_EGRESS_TYPES_ERROR_OTHER, "out of memory");
            } else {
                *upload = (exports_diagmon_egress_provider_upload_t){
                    .fd = fd, .partial = partial, .final = final, .offset = 0};
                partial = NULL;
                final = NULL;
                *ret = exports_diagmon_egress_provider_upload_new(upload);
                ok = true;
            }
        }
    }
    free(directory);
    free(name);
    free(operation);
    free(final);
    free(partial);
    return ok;
}

bool exports_diagmon_egress_provider_method_upload_write(
    exports_diagmon_egress_provider_borrow_upload_t self, egress_provider_list_u8_t *chunk,
    provider_error_t *err) {
    // pwrite is one host call per chunk; a short write continues where it stopped.
    size_t done = 0;
    bool ok = true;
    while (done < chunk->len) {
        ssize_t written = pwrite(self->fd, chunk->ptr + done, chunk->len - done,
                                 (off_t)(self->offset + done));
        if (written <= 0) {
            // A write of nothing would make no progress: an error too, not a loop.
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_IO, "cannot write to %s: %s",
                      self->partial, written < 0 ? strerror(errno) : "nothing was written");
            ok = false;
            break;
        }
        done += (size_t)written;
    }
    self->offset += done;
    egress_provider_list_u8_free(chunk);
    return ok;
}

// Puts the written partial file under its final name. With `overwrite`, a rename; without it, a
// hard link, which fails if the name exists, so that a file another upload stored meanwhile is
// never replaced (checking first and renaming after would leave a window), then the partial name
// is removed.
static bool commit(exports_diagmon_egress_provider_upload_t *upload, provider_error_t *err) {
    if (overwrite) {
        if (rename(upload->partial, upload->final) == 0) {
            return true;
        }
        set_error(err, DIAGMON_EGRESS_TYPES_ERROR_IO, "cannot rename %s to %s: %s",
                  upload->partial, upload->final, strerror(errno));
        return false;
    }
    if (link(upload->partial, upload->final) != 0) {
        if (errno == EEXIST) {
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_DENIED,
                      "%s appeared while the artifact was written; it was kept", upload->final);
        } else {
            set_error(err, DIAGMON_EGRESS_TYPES_ERROR_IO, "cannot link %s to %s: %s",
                      upload->partial, upload->final, strerror(errno));
        }
        return false;
    }
    // The artifact is stored; the partial name is only a second name for it now.
    unlink(upload->partial);
    return true;
}

bool exports_diagmon_egress_provider_static_upload_finish(
    exports_diagmon_egress_provider_own_upload_t this_,
    exports_diagmon_egress_provider_egress_result_t *ret, provider_error_t *err) {
    exports_diagmon_egress_provider_upload_t *upload = exports_diagmon_egress_provider_upload_rep(this_);
    bool ok = false;
    int closed = close(upload->fd);
    upload->fd = -1;
    if (closed != 0) {
        set_error(err, DIAGMON_EGRESS_TYPES_ERROR_IO, "cannot close %s: %s", upload->partial,
                  strerror(errno));
    } else if (commit(upload, err)) {
        char *message = NULL;
        if (asprintf(&message, "stored %llu bytes in %s", (unsigned long long)upload->offset,
                     upload->final) >= 0) {
            egress_provider_string_t text = {(uint8_t *)message, strlen(message)};
            diagmon_egress_log_log(DIAGMON_EGRESS_LOG_LEVEL_INFO, &text);
            free(message);
        }
        // The location is handed over: the bindings free it after the call.
        ret->location.ptr = (uint8_t *)upload->final;
        ret->location.len = strlen(upload->final);
        upload->final = NULL;
        free(upload->partial);
        upload->partial = NULL;
        ok = true;
    }
    // Dropping the handle runs the destructor, which removes the partial file if it is left.
    exports_diagmon_egress_provider_upload_drop_own(this_);
    return ok;
}

bool exports_diagmon_egress_provider_static_upload_abort(
    exports_diagmon_egress_provider_own_upload_t this_, provider_error_t *err) {
    exports_diagmon_egress_provider_upload_t *upload = exports_diagmon_egress_provider_upload_rep(this_);
    bool ok = true;
    if (upload->fd >= 0) {
        close(upload->fd);
        upload->fd = -1;
    }
    if (unlink(upload->partial) != 0 && errno != ENOENT) {
        set_error(err, DIAGMON_EGRESS_TYPES_ERROR_IO, "cannot remove %s: %s", upload->partial,
                  strerror(errno));
        ok = false;
    } else {
        free(upload->partial);
        upload->partial = NULL;
    }
    exports_diagmon_egress_provider_upload_drop_own(this_);
    return ok;
}

// Runs when the upload's handle is dropped: by finish and abort above, or by diagmon. Whatever
// is still open or unfinished goes.
void exports_diagmon_egress_provider_upload_destructor(
    exports_diagmon_egress_provider_upload_t *upload) {
    if (upload->fd >= 0) {
        close(upload->fd);
    }
    if (upload->partial != NULL) {
        unlink(upload->partial);
    }
    free(upload->partial);
    free(upload->final);
    free(upload);
}
