//! Cross-language agreement: the shared vectors in `tests/vectors/` were written by fastavro.
//! Every valid record must encode here to exactly fastavro's bytes and decode back to the
//! record; every hostile input must fail with the code and field the vector names.

use std::path::PathBuf;

use kstrade_codec::{
    decode, encode, AvroRecord, Candle, CandleOrigin, Context, Direction, FeatureVector, ModelType,
    Prediction,
};
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(name: &str) -> Value {
    let path = repo_root()
        .join("tests/vectors")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string"))
        .to_owned()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number"))
}

fn candle(v: &Value) -> Candle {
    Candle {
        timestamp_us: v["timestamp"].as_i64().unwrap(),
        symbol: s(v, "symbol"),
        interval: s(v, "interval"),
        open: f(v, "open"),
        high: f(v, "high"),
        low: f(v, "low"),
        close: f(v, "close"),
        volume: f(v, "volume"),
        source: s(v, "source"),
        minutes: v["minutes"]
            .as_i64()
            .map(|m| i32::try_from(m).expect("minutes fits an int")),
        origin: v["origin"]
            .as_str()
            .map(|o| CandleOrigin::from_symbol(o).expect("a CandleOrigin symbol")),
    }
}

fn feature_vector(v: &Value) -> FeatureVector {
    FeatureVector {
        timestamp_us: v["timestamp"].as_i64().unwrap(),
        symbol: s(v, "symbol"),
        version: s(v, "version"),
        names: v["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect(),
        values: v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
    }
}

fn prediction(v: &Value) -> Prediction {
    let p = &v["prediction"];
    Prediction {
        timestamp_us: v["timestamp"].as_i64().unwrap(),
        symbol: s(v, "symbol"),
        model_type: ModelType::from_symbol(&s(v, "model_type")).unwrap(),
        model_version: s(v, "model_version"),
        direction: Direction::from_symbol(&s(p, "direction")).unwrap(),
        probability: f(p, "probability"),
        confidence: f(p, "confidence"),
        inference_time_ms: f(v, "inference_time_ms"),
    }
}

/// Doubles compare by bits so -0.0 vs 0.0 and the last ulp both count.
fn same_bits<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn check<T: AvroRecord + std::fmt::Debug + PartialEq>(name: &str, build: fn(&Value) -> T) {
    let vectors = load(name);
    assert_eq!(vectors["schema"].as_str(), Some(T::SCHEMA));
    assert_eq!(vectors["version"].as_u64(), Some(u64::from(T::VERSION)));
    let valid = vectors["valid"].as_array().unwrap();
    assert!(!valid.is_empty());
    for case in valid {
        let record = build(&case["record"]);
        let expected = hex(case["hex"].as_str().unwrap());
        let bytes = encode(&record).unwrap_or_else(|e| panic!("{name}/{}: {e}", case["name"]));
        assert_eq!(
            bytes, expected,
            "{name}/{}: encoding differs from fastavro",
            case["name"]
        );
        let back: T = decode(&expected, Some(T::VERSION), &Context::default()).unwrap();
        assert!(
            same_bits(&back, &record),
            "{name}/{}: {back:?} != {record:?}",
            case["name"]
        );
    }
    for case in vectors["noncanonical"].as_array().unwrap() {
        let record = build(&case["record"]);
        let back: T = decode(
            &hex(case["hex"].as_str().unwrap()),
            None,
            &Context::default(),
        )
        .unwrap();
        assert!(same_bits(&back, &record), "{name}/{}", case["name"]);
        assert_eq!(
            encode(&record).unwrap(),
            hex(case["canonical_hex"].as_str().unwrap())
        );
    }
    // Bodies written with an older released version decode natively when the layout reads
    // that version (fields added since at their defaults).
    for case in vectors["older"].as_array().unwrap() {
        let version = u32::try_from(case["version"].as_u64().unwrap()).unwrap();
        assert!(
            T::OLDER_VERSIONS.contains(&version),
            "{name}/{}: v{version} is not read natively",
            case["name"]
        );
        let record = build(&case["record"]);
        let back: T = decode(
            &hex(case["hex"].as_str().unwrap()),
            Some(version),
            &Context::default(),
        )
        .unwrap_or_else(|e| panic!("{name}/{}: {e}", case["name"]));
        assert!(
            same_bits(&back, &record),
            "{name}/{}: {back:?} != {record:?}",
            case["name"]
        );
    }
    let ctx = Context {
        topic: Some(format!("test.{name}")),
        offset: Some(1234),
    };
    for case in vectors["invalid"].as_array().unwrap() {
        let err = decode::<T>(&hex(case["hex"].as_str().unwrap()), None, &ctx)
            .expect_err(&format!("{name}/{} decoded", case["name"]));
        assert_eq!(
            err.code(),
            case["code"].as_str().unwrap(),
            "{name}/{}: {err}",
            case["name"]
        );
        assert_eq!(
            err.location().field,
            case["field"].as_str().unwrap(),
            "{name}/{}: {err}",
            case["name"]
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("test.{name}")) && msg.contains("1234"),
            "{msg}"
        );
    }
}

#[test]
fn candles_agree_with_fastavro() {
    check("candle", candle);
    assert!(!load("candle")["older"].as_array().unwrap().is_empty());
}

#[test]
fn feature_vectors_agree_with_fastavro() {
    check("feature_vector", feature_vector);
}

#[test]
fn predictions_agree_with_fastavro() {
    check("prediction", prediction);
}

/// The hand-written layouts follow the `.avsc` field order (the wire format is positional).
#[test]
fn layouts_follow_the_schema_files() {
    fn fields(name: &str) -> (String, u64, Vec<String>) {
        let path = repo_root().join("schemas").join(format!("{name}.avsc"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let full = format!(
            "{}.{}",
            v["namespace"].as_str().unwrap(),
            v["name"].as_str().unwrap()
        );
        let names = v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect();
        (full, v["version"].as_u64().unwrap(), names)
    }
    fn same<T: AvroRecord>(name: &str) {
        let (full, version, names) = fields(name);
        assert_eq!(full, T::SCHEMA);
        assert_eq!(
            version,
            u64::from(T::VERSION),
            "{name}: schema version bumped without a new layout"
        );
        assert_eq!(
            names,
            T::FIELDS,
            "{name}: field order differs from the .avsc"
        );
    }
    same::<Candle>("candle");
    same::<FeatureVector>("feature_vector");
    same::<Prediction>("prediction");
}

/// Hostile bytes never panic: every single-byte mutation and every prefix of every vector
/// decodes to a record or to an error.
#[test]
fn mutations_of_the_vectors_never_panic() {
    fn mutate<T: AvroRecord>(name: &str) -> usize {
        let mut errors = 0;
        let vectors = load(name);
        let cases = vectors["valid"].as_array().unwrap();
        for case in cases.iter().chain(vectors["older"].as_array().unwrap()) {
            let good = hex(case["hex"].as_str().unwrap());
            for n in 0..good.len() {
                errors += usize::from(decode::<T>(&good[..n], None, &Context::default()).is_err());
                for b in [0x00u8, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                    let mut bad = good.clone();
                    bad[n] = b;
                    errors += usize::from(decode::<T>(&bad, None, &Context::default()).is_err());
                }
            }
        }
        errors
    }
    assert!(mutate::<Candle>("candle") > 0);
    assert!(mutate::<FeatureVector>("feature_vector") > 0);
    assert!(mutate::<Prediction>("prediction") > 0);
}
