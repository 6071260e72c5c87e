//! A certificate authority of one test, made with `openssl`: for TLS listeners (`rediss://`,
//! `amqps://`) whose certificate the test's client must be told to trust.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh CA and a server certificate it signed for `127.0.0.1` (as IP subject alternative
/// name), valid two days, in a directory the caller owns.
///
/// ```no_run
/// let dir = std::env::temp_dir().join(dq_test::unique_name("tls"));
/// let ca = dq_test::TestCa::create(&dir);
/// assert!(std::fs::read_to_string(ca.ca_cert()).unwrap().contains("BEGIN CERTIFICATE"));
/// ```
#[derive(Debug, Clone)]
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Writes `ca.crt`, `ca.key`, `server.crt` and `server.key` into `dir` (created if
    /// missing). Panics, naming the step, when `openssl` is missing or fails.
    pub fn create(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("create the TLS directory");
        let days = "2";
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                days,
                "-subj",
                "/CN=dq test ca",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")
            .expect("write san.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                days,
                "-extfile",
                "san.ext",
            ],
        );
        TestCa {
            dir: dir.to_owned(),
        }
    }

    /// The CA's certificate (PEM): what a client trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server's certificate (PEM), signed by the CA, for `127.0.0.1`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server's private key (PEM, unencrypted).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The CA's certificate, read.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_cert()).expect("read ca.crt")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for the TLS tests: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
