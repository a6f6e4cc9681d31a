//! Tries, in `begin`, to write and read outside its granted directory: `../` from the grant, an
//! absolute path elsewhere, `/etc/passwd`, and to plant relative symbolic links in the grant
//! (`../../etc`, `.`) for whoever uses the directory next. Reports every attempt: `denied` naming each refusal
//! when all were refused (what the host must make happen), `other("ESCAPED ...")` otherwise.

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

struct Component;

impl Guest for Component {
    type Upload = Nothing;
    fn configure(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }
    fn begin(artifact: Artifact) -> Result<Upload, Error> {
        let preopen = wasip2::filesystem::preopens::get_directories()
            .into_iter()
            .next();
        let grant = preopen
            .as_ref()
            .map(|(_, path)| path.clone())
            .unwrap_or_else(|| "/".to_owned());
        let symlink = |target: &str, name: &str| -> (String, std::io::Result<()>) {
            let result = match &preopen {
                Some((directory, _)) => directory
                    .symlink_at(target, name)
                    .map_err(|code| std::io::Error::other(format!("{code:?}"))),
                None => Err(std::io::Error::other("no grant")),
            };
            (format!("symlink {grant}/{name} -> {target}"), result)
        };
        let id = &artifact.operation_id;
        let attempts: Vec<(String, std::io::Result<()>)> = vec![
            {
                let path = format!("{grant}/../escaped-{id}.txt");
                let result = std::fs::write(&path, b"escaped");
                (format!("write {path}"), result)
            },
            {
                let path = format!("/tmp/escaped-{id}.txt");
                let result = std::fs::write(&path, b"escaped");
                (format!("write {path}"), result)
            },
            {
                let result = std::fs::read("/etc/passwd").map(|_| ());
                ("read /etc/passwd".to_owned(), result)
            },
            {
                let path = "../escaped-relative.txt".to_owned();
                let result = std::fs::write(&path, b"escaped");
                (format!("write {path}"), result)
            },
            symlink("../../etc", "etc"),
            symlink(".", "here"),
        ];
        let escaped: Vec<&str> = attempts
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(what, _)| what.as_str())
            .collect();
        if !escaped.is_empty() {
            return Err(Error::Other(format!("ESCAPED: {}", escaped.join(", "))));
        }
        let refusals: Vec<String> = attempts
            .iter()
            .map(|(what, r)| format!("{what}: {}", r.as_ref().unwrap_err()))
            .collect();
        Err(Error::Denied(format!(
            "every path outside the grant was refused: {}",
            refusals.join("; ")
        )))
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
