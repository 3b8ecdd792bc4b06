# bertapprox-hf developer targets.
# SHARED: the shared data and teachers (read-only). WORK: vocabularies, targets and runs.
SHARED ?= $(abspath ../shared)
WORK ?= $(HOME)/.cache/bertapprox/work
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
TEACHER_NAME ?= all-MiniLM-L6-v2
CONFIG ?= configs/demo.yaml
PER_SOURCE ?= 15000
# Training texts the demo's contextual table reads (a seeded sample; empty: all 92k, about 18 minutes here).
CONTEXT_TEXTS ?= 40000
export TEACHER_NAME
export BERTAPPROX_SHARED := $(SHARED)
export BERTAPPROX_WORK := $(WORK)
export HF_HUB_OFFLINE ?= 1

DATA := $(SHARED)/data
# Documents only: training texts and the retrieval corpora, never their queries or judgments.
CORPUS := $(addprefix $(DATA)/train/,msmarco_queries.jsonl msmarco_v2_passages.jsonl \
	reuters21578_sentences.jsonl wordnet30_glosses.jsonl senteval_sentences.jsonl) \
	$(DATA)/msmarco-passage-dl19/corpus.jsonl $(DATA)/beir/scifact/corpus.jsonl
VOCAB := $(WORK)/vocab-$(TEACHER_NAME)
TARGETS := $(WORK)/targets-$(TEACHER_NAME)
TARGETS_MORE := $(WORK)/targets-more-$(TEACHER_NAME)
TARGETS_REST := $(WORK)/targets-rest-$(TEACHER_NAME)
TARGETS_CROPS := $(WORK)/targets-crops-$(TEACHER_NAME)
TARGETS_CROPS_REST := $(WORK)/targets-crops-rest-$(TEACHER_NAME)
TARGETS_CROPS_MORE := $(WORK)/targets-crops-more-$(TEACHER_NAME)
VOCAB_CONTEXTUAL := $(WORK)/vocab-contextual-$(TEACHER_NAME)
# The teacher's embeddings of the texts the contextual table read: make targets copies them (--reuse)
TARGETS_CONTEXT_SAMPLE := $(WORK)/targets-context-sample-$(TEACHER_NAME)
# Ranking distillation: every MS MARCO training query, and its top 32 of the demo's documents by the teacher.
TARGETS_QUERIES := $(WORK)/targets-queries-$(TEACHER_NAME)
CANDIDATES := $(WORK)/candidates-$(TEACHER_NAME)
VOCAB_CONTEXTUAL_FULL := $(WORK)/vocab-contextual-full-$(TEACHER_NAME)
VOCAB_CONTEXTUAL_DEMO_ALL := $(WORK)/vocab-contextual-demotexts-$(TEACHER_NAME)
TARGETS_CROPS3 := $(WORK)/targets-crops3-$(TEACHER_NAME)
# A local copy of the teacher (verified download); elsewhere set TEACHER to a Hub id.
TEACHER = $(shell bash $(SHARED)/teachers/fetch $(TEACHER_NAME) | tail -n 1)
# The teacher passes' autocast: bf16 is 1.8-2.2x as fast on a CPU with AVX-512 BF16, the embeddings within 1e-4
# cosine of float32's (python -m benchmarks.teacher_precision), so it is the default where the CPU has it
# (AVX-512 BF16 or AMX), float32 elsewhere. A targets folder is extended only in its own precision (a complete
# one is read in any: make full-pairs TEACHER_PRECISION=bf16 after a float32 make demo).
NATIVE_BF16 := $(shell grep -q -m1 -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo bf16 || echo no)
TEACHER_PRECISION ?= $(NATIVE_BF16)
TEACHER_ARGS = --teacher $(TEACHER) --mixed-precision $(TEACHER_PRECISION)
# More train.py options for make train and make full-pairs, e.g. "--set run.mixed_precision=bf16".
TRAIN_ARGS ?=

.PHONY: install test lint demo student vocab targets targets-queries candidates targets-more targets-rest targets-crops targets-crops-rest targets-crops-more vocab-contextual vocab-contextual-demo-all vocab-contextual-full train best targets-crops3 gpu-data speed clean

install:  ## torch first (the CPU wheel), then the package with training, indexing and dev extras
	$(PYTHON) -m pip install --quiet $(TORCH_PIN)
	$(PYTHON) -m pip install --quiet -e ".[train,dev,index,pyserini,bench,export,serve,research,ray]"

test: install  ## the test suite (the command CI runs); installs first
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .

demo: install vocab vocab-contextual targets train  ## the main job: vocabulary, contextual table, teacher targets, distillation, report

# The demo recipe's student as shipped: its trainable weights (bertapprox model strip), restored on the vocabulary
# and contextual table built here, and checked against the original's embeddings (no targets, no training).
SHIPPED ?= results/demo/student
student: install vocab vocab-contextual  ## the shipped demo student, restored and checked: $(WORK)/student-demo
	bertapprox model restore $(SHIPPED) --vocab $(VOCAB_CONTEXTUAL) --out $(WORK)/student-demo

vocab: $(VOCAB)/vocabulary.json
$(VOCAB)/vocabulary.json:
	bertapprox vocab build $(TEACHER_ARGS) --out $(VOCAB) --max-per-source 30000 --corpus $(CORPUS)

targets:  ## resumes by itself: finished shards are kept; copies what the contextual table's pass embedded
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS) --max-per-source $(PER_SOURCE) --corpus $(CORPUS) \
		$$(test -f $(TARGETS_CONTEXT_SAMPLE)/manifest.json && echo --reuse $(TARGETS_CONTEXT_SAMPLE))

targets-queries:  ## every MS MARCO training query (20,562: the ranking distillation's queries)
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_QUERIES) --corpus $(DATA)/train/msmarco_queries.jsonl

candidates: targets targets-queries  ## each training query's top 32 of the demo's documents by the teacher (Faiss)
	bertapprox candidates build --queries $(TARGETS_QUERIES) --documents $(TARGETS) --out $(CANDIDATES) \
		--val-fraction 0.03

targets-more:  ## the next 25,000 texts of each source (configs/best.yaml)
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_MORE) --skip-per-source $(PER_SOURCE) \
		--max-per-source 25000 --corpus $(CORPUS)

targets-rest:  ## every text after those (configs/best.yaml)
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_REST) --skip-per-source $$(($(PER_SOURCE) + 25000)) \
		--corpus $(CORPUS)

targets-crops:  ## a crop (a random run of words) of each long text of the demo's: more passage-like texts
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_CROPS) --max-per-source $(PER_SOURCE) --crops 1 \
		--corpus $(CORPUS)

targets-crops-rest:  ## the same for each long text after the demo's (configs/best.yaml)
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_CROPS_REST) --skip-per-source $(PER_SOURCE) --crops 1 \
		--corpus $(CORPUS)

targets-crops-more:  ## two more crops (numbers 1 and 2) of every long text, the two sets above left as they are
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_CROPS_MORE) --crops 2 --first-crop 1 \
		--corpus $(CORPUS)

# $(call contextualize,OUT,MAX_TEXTS[,TARGETS]): the contextual table beside the isolated one, from the training
# texts of TARGETS (default: the demo's, read from the corpus as its targets build reads them: no teacher pass
# needed before), at most MAX_TEXTS of them (empty: all)
contextualize = bertapprox vocab contextualize --mixed-precision $(TEACHER_PRECISION) --vocab $(VOCAB) \
	$(if $(3),--targets $(3),--corpus $(CORPUS) --max-per-source $(PER_SOURCE)) --val-fraction 0.03 \
	--keep-isolated $(if $(2),--max-texts $(2)) --out $(1)

vocab-contextual: $(VOCAB_CONTEXTUAL)/vocabulary.json  ## each entry's teacher token states in the demo's training texts beside its own
$(VOCAB_CONTEXTUAL)/vocabulary.json: $(VOCAB)/vocabulary.json
	$(call contextualize,$(VOCAB_CONTEXTUAL),$(CONTEXT_TEXTS)) --save-targets $(TARGETS_CONTEXT_SAMPLE)

vocab-contextual-demo-all: $(VOCAB_CONTEXTUAL_DEMO_ALL)/vocabulary.json  ## the same from all 92k demo training texts (the full-scale pair recipes)
$(VOCAB_CONTEXTUAL_DEMO_ALL)/vocabulary.json: $(VOCAB)/vocabulary.json
	$(call contextualize,$(VOCAB_CONTEXTUAL_DEMO_ALL),)

vocab-contextual-full:  ## the same over the training texts of all three sets
	$(call contextualize,$(VOCAB_CONTEXTUAL_FULL),,$(TARGETS) $(TARGETS_MORE) $(TARGETS_REST))

train:
	$(PYTHON) train.py --config $(CONFIG) $(TRAIN_ARGS)

BEST_SETS := install vocab targets targets-more targets-rest targets-crops targets-crops-rest vocab-contextual-demo-all

best: $(BEST_SETS)  ## the best CPU student (configs/best.yaml, three stages: about 4.5 h on 2 cores; rerun to resume)
	$(PYTHON) train.py --config configs/best.yaml --resume $(TRAIN_ARGS)

targets-crops3:  ## three crops of every long text of every set (configs/gpu.yaml)
	bertapprox targets build $(TEACHER_ARGS) --out $(TARGETS_CROPS3) --crops 3 --corpus $(CORPUS)

gpu-data: install vocab targets targets-more targets-rest targets-crops3  ## what configs/gpu.yaml reads
	$(call contextualize,$(VOCAB_CONTEXTUAL_FULL),92000,$(TARGETS) $(TARGETS_MORE) $(TARGETS_REST))

speed:  ## throughput, latency, memory, size: teacher vs student (float32/int8/bfloat16) vs model2vec
	OMP_WAIT_POLICY=PASSIVE $(PYTHON) -m benchmarks.speed --model $(WORK)/run-$(TEACHER_NAME)/best --teacher $(TEACHER) \
		--queries $(DATA)/train/msmarco_queries.jsonl --corpus $(DATA)/msmarco-passage-dl19/corpus.jsonl \
		--distill-model2vec --threads 1 all --out results/speed

clean:
	rm -rf results .pytest_cache
