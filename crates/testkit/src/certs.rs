//! Throwaway TLS material for tests, made with the `openssl` command line in a temp dir:
//! a CA, a server certificate for `127.0.0.1` and `localhost` (also good as a client
//! certificate: a TLS cluster bus and TLS replicas show it to their peers), a client certificate,
//! a second unrelated CA (for "unknown CA" tests) and an expired server certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The files of one set of test certificates; cloning shares the directory.
#[derive(Clone, Debug)]
pub struct TestCerts {
    dir: Arc<tempfile::TempDir>,
}

impl TestCerts {
    /// Makes every file. Takes about a second (RSA keys are slow; EC keys are used).
    ///
    /// # Panics
    /// If `openssl` is missing or fails; the message has its output.
    pub fn generate() -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("rsm-testkit-certs-")
            .tempdir()
            .expect("temp dir for certificates");
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write server.ext");
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        for ca in ["ca", "other-ca"] {
            key(d, ca);
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    &format!("{ca}.key"),
                    "-days",
                    "30",
                    "-subj",
                    &format!("/CN=rsm test {ca}"),
                    "-out",
                    &format!("{ca}.crt"),
                ],
            );
        }
        for leaf in ["server", "client"] {
            key(d, leaf);
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{leaf}.key"),
                    "-subj",
                    &format!("/CN=rsm test {leaf}"),
                    "-out",
                    &format!("{leaf}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{leaf}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "30",
                    "-extfile",
                    &format!("{leaf}.ext"),
                    "-out",
                    &format!("{leaf}.crt"),
                ],
            );
        }
        expired(d);
        TestCerts { dir: Arc::new(dir) }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }
    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }
    /// A server certificate (same names, same CA) that expired in 2020.
    pub fn expired_cert(&self) -> PathBuf {
        self.file("expired.crt")
    }
    /// The key of [`TestCerts::expired_cert`] (the server key).
    pub fn expired_key(&self) -> PathBuf {
        self.server_key()
    }
}

fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// `openssl x509` cannot back-date a certificate; `openssl ca` can, with a minimal config.
fn expired(dir: &Path) {
    std::fs::write(dir.join("index.txt"), "").expect("write index.txt");
    std::fs::write(dir.join("serial"), "1000\n").expect("write serial");
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca=test\n[test]\ndatabase=index.txt\nserial=serial\nnew_certs_dir=.\n\
         certificate=ca.crt\nprivate_key=ca.key\ndefault_md=sha256\npolicy=any\n\
         copy_extensions=none\nunique_subject=no\n[any]\ncommonName=supplied\n\
         [ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write ca.cnf");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-extensions",
            "ext",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
            "-in",
            "server.csr",
            "-out",
            "expired.crt",
            "-notext",
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
