//! The ops console in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them). An operator logs in, sees the
//! connector, opens the dead letter a Close 400 made, fixes the cause, replays it from the
//! page, and the lead appears in the Close simulator.
//!
//! With `CONSOLE_SCREENSHOTS=<dir>` the test saves a PNG of each page there (the pictures in
//! `docs/operations.md` come from it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use harness::{
    default_settings, EnvOptions, TestEnv, API_KEY, CONNECTOR_ID, OTHER_SEGMENT, SYNC_SEGMENT,
};

const TOKEN: &str = "console-e2e-admin-token-0123456789";

/// A chromedriver process on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): install chromium and chromium-driver (`.ci/run` does)")
            });
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("console-e2e-{}", uuid::Uuid::new_v4()));
        Driver {
            child,
            port,
            profile,
        }
    }

    async fn browser(&self) -> Client {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", self.profile.display()),
                ]
            }),
        );
        // Plain HTTP to the local chromedriver: no TLS stack needed.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("connect to chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn shot(browser: &Client, name: &str) {
    let Ok(dir) = std::env::var("CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).expect("write png");
}

async fn text_of(browser: &Client, css: &str) -> String {
    match browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e.text().await.expect("text"),
        Err(e) => panic!(
            "no {css} on {:?}: {e}\n{}",
            browser.current_url().await.map(|u| u.to_string()),
            browser.source().await.unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_dead_letter_from_the_console_in_a_browser() {
    let mut settings = default_settings();
    settings["lead_status"] = json!("stat_does_not_exist");
    let env = TestEnv::start(EnvOptions {
        settings: settings.clone(),
        accounts: vec![
            json!({"domain": "broken.example.com", "name": "Broken", "segment_ids": [SYNC_SEGMENT]}),
            json!({"domain": "other.example.com", "name": "Other", "segment_ids": [OTHER_SEGMENT]}),
        ],
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let broken = env
        .hull
        .find_account("domain", "broken.example.com")
        .expect("account")
        .id;
    let other = env
        .hull
        .find_account("domain", "other.example.com")
        .expect("account")
        .id;
    env.hull
        .notify(
            CONNECTOR_ID,
            "account:update",
            std::slice::from_ref(&broken),
        )
        .await
        .expect("notify");
    env.drain().await.expect("drain");
    assert!(env.leads_with_url("broken.example.com").is_empty());

    // The admin listener as the scheduler serves it (with its Close client).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let admin = env.scheduler().expect("scheduler").admin();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { admin::serve(listener, admin, TOKEN, Default::default(), s).await });

    let driver = Driver::start().await;
    let browser = driver.browser().await;

    // Logging in.
    browser
        .goto(&format!("{base}/console/"))
        .await
        .expect("goto");
    assert!(browser
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/console/login"));
    shot(&browser, "login").await;
    browser
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys("not-the-token-but-long-enough")
        .await
        .expect("type");
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    assert!(text_of(&browser, ".error")
        .await
        .contains("not the admin token"));
    browser
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys(TOKEN)
        .await
        .expect("type");
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");

    // The overview shows the connector and its dead letter.
    let connectors = text_of(&browser, "#connectors").await;
    assert!(connectors.contains(CONNECTOR_ID), "{connectors}");
    let queues = text_of(&browser, "#queues").await;
    assert!(queues.contains(&env.prefix), "{queues}");
    shot(&browser, "overview").await;

    // The connector's page.
    browser
        .find(Locator::LinkText(CONNECTOR_ID))
        .await
        .expect("connector link")
        .click()
        .await
        .expect("click");
    assert!(text_of(&browser, "h1").await.contains(CONNECTOR_ID));
    let page = browser.source().await.expect("source");
    assert!(!page.contains(API_KEY), "no secret on the page");
    shot(&browser, "connector").await;

    // The dead letters, grouped by error class.
    browser
        .find(Locator::LinkText("Dead letters"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    assert!(text_of(&browser, "#classes")
        .await
        .contains("close_bad_request"));
    shot(&browser, "dead-letters").await;
    browser
        .find(Locator::Css("#dead-letters tbody a"))
        .await
        .expect("a dead letter")
        .click()
        .await
        .expect("click");
    let body = text_of(&browser, "#last-body").await;
    assert!(
        body.contains("stat_does_not_exist"),
        "the body that failed: {body}"
    );
    let entity = text_of(&browser, "#hull-entity").await;
    assert!(entity.contains("broken.example.com"), "{entity}");
    assert!(text_of(&browser, "#errors")
        .await
        .contains("Not a valid choice"));
    shot(&browser, "dead-letter").await;

    // The operator fixes the setting in Hull; the next notification carries it (for an account
    // outside the whitelist, so nothing but the replay syncs the broken one).
    settings["lead_status"] = json!("hull-default");
    env.hull.set_private_settings(CONNECTOR_ID, settings);
    env.hull
        .notify(CONNECTOR_ID, "account:update", &[other])
        .await
        .expect("notify");
    env.drain().await.expect("drain");
    assert!(env.leads_with_url("broken.example.com").is_empty());

    // Replay from the page.
    browser
        .find(Locator::XPath("//button[normalize-space()='Replay']"))
        .await
        .expect("replay button")
        .click()
        .await
        .expect("click");
    assert!(text_of(&browser, ".notice")
        .await
        .contains("1 dead letter(s) replayed"));
    env.drain().await.expect("drain");
    assert_eq!(
        env.leads_with_url("broken.example.com").len(),
        1,
        "the replayed job synced the lead"
    );
    browser.refresh().await.expect("reload");
    let facts = text_of(&browser, "#facts").await;
    assert!(!facts.contains("Replayed never"), "{facts}");

    // The retries page, and logging out.
    browser
        .find(Locator::LinkText("Retries"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    shot(&browser, "retries").await;
    browser
        .find(Locator::XPath("//button[normalize-space()='Log out']"))
        .await
        .expect("logout")
        .click()
        .await
        .expect("click");
    browser
        .goto(&format!("{base}/console/"))
        .await
        .expect("goto");
    assert!(browser
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/console/login"));

    browser.close().await.expect("close browser");
    stop.cancel();
    env.cleanup().await;
}
