//! Imports `wasi:http/outgoing-handler`: loading it without `allowed_outbound_hosts` must fail,
//! naming the import and the grant it needs.

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};
use wasip2::http::types::{Fields, OutgoingRequest};

struct Component;

impl Guest for Component {
    type Upload = Nothing;
    fn configure(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        let request = OutgoingRequest::new(Fields::new());
        match wasip2::http::outgoing_handler::handle(request, None) {
            Ok(_) => Ok(Upload::new(Nothing)),
            Err(e) => Err(Error::Unavailable(format!("{e:?}"))),
        }
    }
}

struct Nothing;

impl GuestUpload for Nothing {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
