//! Loading GGUF models once per process and sharing them between engines and clients.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::gguf::check_gguf;
use super::grammar::ToolCallSyntax;
use super::template::{ChatTemplate, CHATML_TEMPLATE};
use crate::error::{Error, Result};
use crate::types::{ChatMessage, Tool};

/// llama.cpp's backend may be initialised once per process, so every model shares this one.
pub(crate) fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // Silent unless the host installs a tracing subscriber: llama.cpp writes to
            // stderr otherwise, which a library must not do to its host.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|err| err.to_string())
        })
        .as_ref()
        .map_err(|reason| Error::Inference(format!("llama.cpp backend failed to initialise: {reason}")))
}

/// How a model takes `tools`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolSupport {
    /// The chat template renders the tools itself (Qwen2.5, Hermes, the ChatML fallback).
    Template,
    /// The template ignores `tools`: slmkit describes them in a system message it adds and
    /// reads bare JSON calls back, with a grammar when the call is forced (SmolLM2).
    Prompt,
}

/// Turn markers of common templates that must never appear in an answer.
const TURN_MARKERS: [&str; 8] = [
    "<|im_end|>",
    "<|im_start|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|endoftext|>",
    "<|end|>",
];

/// Options for loading a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelOptions {
    /// Layers to offload to a GPU; 0 (the default) keeps everything on the CPU.
    pub gpu_layers: u32,
    /// Map the file rather than read it (default true), so processes and engines share pages.
    pub use_mmap: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { gpu_layers: 0, use_mmap: true }
    }
}

/// A loaded GGUF model: weights, vocabulary and chat template. Cheap to clone; clones share
/// the one copy in memory.
#[derive(Clone)]
pub struct LocalModel {
    inner: Arc<LoadedModel>,
}

pub(crate) struct LoadedModel {
    pub(crate) llama: LlamaModel,
    path: PathBuf,
    name: String,
    id: String,
    template: ChatTemplate,
    tool_syntax: ToolCallSyntax,
    has_own_template: bool,
    tool_support: ToolSupport,
    /// Turn markers the template writes that the vocabulary lacks as single tokens (ChatML's
    /// `<|im_end|>` on a model without it): the model can only write them as text, so they
    /// end generation like stop strings and never reach the caller.
    marker_stops: Vec<String>,
    /// Each token's bytes, indexed by token id, so decoding never calls back into llama.cpp.
    pieces: Vec<Vec<u8>>,
    /// Tokens whose bytes are not complete UTF-8 on their own (byte tokens, split
    /// characters): the only ones the UTF-8 mask must look at while no character is pending.
    partial_utf8: Vec<LlamaToken>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("path", &self.inner.path)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

type Registry = Mutex<HashMap<(PathBuf, ModelOptions), Weak<LoadedModel>>>;

fn registry() -> &'static Registry {
    static MODELS: OnceLock<Registry> = OnceLock::new();
    MODELS.get_or_init(Default::default)
}

impl LocalModel {
    /// Loads `path`, or returns the model already loaded from it with the same options.
    ///
    /// The file is checked before llama.cpp reads it, so a missing, non-GGUF, truncated or
    /// corrupt file is an error rather than a crash.
    ///
    /// # Errors
    /// [`Error::ModelLoad`] saying what is wrong with the file.
    pub fn load(path: impl AsRef<Path>, options: &ModelOptions) -> Result<Self> {
        let path = path.as_ref();
        let canonical =
            path.canonicalize().map_err(|err| Error::model_load(path, format!("cannot open file: {err}")))?;
        let key = (canonical.clone(), options.clone());
        // Held across the load so two clients asking for one file at once load it once.
        let mut models = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(inner) = models.get(&key).and_then(Weak::upgrade) {
            return Ok(LocalModel { inner });
        }
        let inner = Arc::new(LoadedModel::load(&canonical, path, options)?);
        models.retain(|_, model| model.strong_count() > 0);
        models.insert(key, Arc::downgrade(&inner));
        Ok(LocalModel { inner })
    }

    /// Whether `self` and `other` are the same loaded weights (one load, shared).
    pub fn shares_weights_with(&self, other: &LocalModel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The model's name: `general.name` from the file, else the file stem.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The id requests can name it by: the file's stem (`qwen2.5-coder-0.5b-instruct-q4_k_m`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The context length the model was trained with.
    pub fn context_length(&self) -> u32 {
        self.inner.llama.n_ctx_train()
    }

    /// Whether the GGUF carries its own chat template (otherwise ChatML is used).
    pub fn has_chat_template(&self) -> bool {
        self.inner.has_own_template
    }

    /// Renders `messages` (and `tools`) with the model's chat template.
    ///
    /// # Errors
    /// [`Error::Template`] when the template rejects the conversation.
    pub fn render_prompt(&self, messages: &[ChatMessage], tools: &[Tool]) -> Result<String> {
        self.inner.template.render(messages, tools)
    }

    /// Tokenizes `text` with the model's vocabulary, parsing special tokens such as
    /// `<|im_start|>` and adding BOS where the model asks for it.
    pub fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.inner.llama.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), false, true);
        let bos = vocab.bos();
        if vocab.should_add_bos() && tokens.first() != Some(&bos) {
            tokens.insert(0, bos);
        }
        tokens
    }

    /// Counts the tokens of `text`, as [`LocalModel::tokenize`] would produce them.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenize(text).len()
    }

    pub(crate) fn tool_syntax(&self) -> ToolCallSyntax {
        self.inner.tool_syntax
    }

    /// How this model takes `tools`, found at load by rendering a probe with and without one.
    pub fn tool_support(&self) -> ToolSupport {
        self.inner.tool_support
    }

    /// Template markers that end generation when the model writes them as text, because the
    /// vocabulary has no single token for them (ChatML's on a model without ChatML).
    pub fn stop_markers(&self) -> &[String] {
        &self.inner.marker_stops
    }

    /// The quantisation of the weights, from the file's `general.file_type` (e.g. `Q4_K_M`).
    pub fn quantization(&self) -> Option<&'static str> {
        let file_type = self.inner.llama.meta_val_str("general.file_type").ok()?.parse::<u32>().ok()?;
        file_type_name(file_type)
    }

    /// The bytes token `token` decodes to (empty for control tokens).
    pub(crate) fn piece(&self, token: LlamaToken) -> &[u8] {
        usize::try_from(token.0).ok().and_then(|index| self.inner.pieces.get(index)).map_or(&[], Vec::as_slice)
    }

    /// The vocabulary's size.
    pub(crate) fn piece_count(&self) -> usize {
        self.inner.pieces.len()
    }

    /// Tokens whose bytes are not complete UTF-8 on their own.
    pub(crate) fn partial_utf8_tokens(&self) -> &[LlamaToken] {
        &self.inner.partial_utf8
    }

    pub(crate) fn llama(&self) -> &LlamaModel {
        &self.inner.llama
    }

    pub(crate) fn shared(&self) -> Arc<LoadedModel> {
        Arc::clone(&self.inner)
    }

    pub(crate) fn from_shared(inner: Arc<LoadedModel>) -> Self {
        LocalModel { inner }
    }
}

impl LoadedModel {
    /// `requested` is the path as given: its stem is the model's id, where the canonical path
    /// may be a content-addressed blob in a download cache.
    fn load(path: &Path, requested: &Path, options: &ModelOptions) -> Result<Self> {
        let summary = check_gguf(path)?;
        if summary.tensor_count == 0 {
            return Err(Error::model_load(path, "the GGUF file holds no tensors"));
        }
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(options.gpu_layers).with_use_mmap(options.use_mmap);
        let llama = LlamaModel::load_from_file(backend, path, &params).map_err(|err| {
            let architecture = summary.architecture.as_deref().unwrap_or("unknown");
            Error::model_load(path, format!("llama.cpp rejected it (architecture {architecture}): {err}"))
        })?;
        let vocab = llama.vocab();
        let piece = |token: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned();
        let bos_token = piece(vocab.bos());
        let eos_token = piece(vocab.eos());
        let has_own_template = summary.chat_template.is_some();
        let source = summary.chat_template.unwrap_or_else(|| CHATML_TEMPLATE.to_owned());
        let template = ChatTemplate::new(source, bos_token, eos_token)
            .map_err(|err| Error::model_load(path, format!("its chat template is unusable: {err}")))?;
        let tool_syntax =
            if template.uses_tool_call_tags() { ToolCallSyntax::Tagged } else { ToolCallSyntax::BareJson };
        let tool_support = if template.renders_tools() { ToolSupport::Template } else { ToolSupport::Prompt };
        let marker_stops = TURN_MARKERS
            .iter()
            .filter(|marker| template.source().contains(**marker))
            .filter(|marker| vocab.tokenize(marker.as_bytes(), false, true).len() != 1)
            .map(|marker| (*marker).to_owned())
            .collect();
        let pieces: Vec<Vec<u8>> =
            (0..vocab.n_tokens()).map(|id| vocab.token_to_piece(LlamaToken(id), false, None)).collect();
        let partial_utf8 = (0..vocab.n_tokens())
            .zip(&pieces)
            .filter(|(_, piece)| std::str::from_utf8(piece).is_err())
            .map(|(id, _)| LlamaToken(id))
            .collect();
        let name = llama
            .meta_val_str("general.name")
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "local".to_owned());
        Ok(LoadedModel {
            llama,
            path: path.to_owned(),
            name,
            id: requested.file_stem().map_or_else(|| "local".to_owned(), |stem| stem.to_string_lossy().into_owned()),
            template,
            tool_syntax,
            has_own_template,
            tool_support,
            marker_stops,
            pieces,
            partial_utf8,
        })
    }
}

/// llama.cpp's `llama_ftype` numbers for the common quantisations.
fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}
