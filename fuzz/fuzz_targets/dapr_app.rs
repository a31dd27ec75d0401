//! What Dapr apps and their operators hand the sidecar: state queries,
//! subscription routing rules (CEL) over delivered events, an HTTP app's
//! answers and `/dapr/subscribe` list, and Dapr resource files.
#![no_main]

use arbitrary::Arbitrary;
use layotto::config::dapr_resources;
use layotto::fuzzing;
use layotto_fuzz::MAX_ERROR_BYTES;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Query {
        query: &'a str,
        entries: Vec<(String, &'a [u8])>,
    },
    Route {
        rules: Vec<(String, String)>,
        default: &'a str,
        delivered: &'a [u8],
    },
    Answer(&'a [u8]),
    Subscribe(&'a [u8]),
    Resource {
        text: &'a str,
        app_id: &'a str,
    },
}

fuzz_target!(|input: Input| match input {
    Input::Query { query, entries } => {
        let count = entries.len();
        let entries = entries.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
        match fuzzing::state_query(query, entries) {
            Ok((keys, token)) => {
                assert!(keys.len() <= count);
                if let Some(token) = token {
                    assert!(token.parse::<usize>().is_ok_and(|t| t <= count), "{token}");
                }
            }
            Err(error) => assert!(error.len() <= MAX_ERROR_BYTES + query.len(), "{error}"),
        }
    }
    Input::Route { rules, default, delivered } => {
        let rules: Vec<(String, String)> = rules.into_iter().take(8).collect();
        if let Ok(Some(path)) = fuzzing::route(&rules, default, delivered) {
            assert!(path == default || rules.iter().any(|(_, p)| *p == path));
        }
    }
    Input::Answer(body) => {
        let _ = fuzzing::app_answer(body);
    }
    Input::Subscribe(body) => {
        if let Ok(subs) = fuzzing::dapr_subscribe(body) {
            for sub in subs {
                assert!(!sub.pubsub_name.is_empty() && !sub.topic.is_empty());
                assert!(!sub.routes.is_empty());
            }
        }
    }
    Input::Resource { text, app_id } => {
        if let Err(problems) = dapr_resources::load_text("fuzz.yaml", text, app_id) {
            assert!(!problems.is_empty());
        }
    }
});
