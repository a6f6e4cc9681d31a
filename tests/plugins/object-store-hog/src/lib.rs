//! Keeps as many object-store parts in flight as the host lets it: in `write` it starts the
//! most multipart uploads an instance may have (4), each with 16 parts in flight, and puts
//! `parts` parts of `part_mib` MiB into each. Against a store that never answers, every part
//! stays in the host's memory; the host must charge them to the provider's memory limit.

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "object-storage-provider" });

use std::cell::RefCell;

use diagmon::egress::object_store::{self as store, MultipartUpload, ObjectOptions};
use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

thread_local! {
    static SETTINGS: RefCell<(usize, usize)> = const { RefCell::new((8, 16)) };
}

struct Component;

impl Guest for Component {
    type Upload = Hog;
    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let (mut part_mib, mut parts) = (8, 16);
        for (key, value) in settings {
            let number = value
                .parse()
                .map_err(|_| Error::InvalidSettings(format!("`{key}` = `{value}`")))?;
            match key.as_str() {
                "part_mib" => part_mib = number,
                "parts" => parts = number,
                _ => return Err(Error::InvalidSettings(format!("unknown setting `{key}`"))),
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = (part_mib, parts));
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        Ok(Upload::new(Hog))
    }
}

struct Hog;

impl GuestUpload for Hog {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        let (part_mib, parts) = SETTINGS.with(|s| *s.borrow());
        let part = vec![0x5a_u8; part_mib << 20];
        let options = ObjectOptions {
            content_type: None,
            metadata: Vec::new(),
        };
        let mut uploads: Vec<MultipartUpload> = Vec::new();
        let mut accepted = 0;
        for upload in 0..4 {
            let handle = store::begin_multipart(&format!("hog/{upload}.bin"), &options, 16)
                .map_err(|e| Error::Other(format!("begin after {accepted} parts: {e:?}")))?;
            for _ in 0..parts {
                handle
                    .put_part(&part)
                    .map_err(|e| Error::Other(format!("put-part after {accepted} parts: {e:?}")))?;
                accepted += 1;
            }
            uploads.push(handle);
        }
        Err(Error::Other(format!("ALL {accepted} parts accepted")))
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
