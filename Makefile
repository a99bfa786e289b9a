# Two-command set-up: `make demo` and `make test` each create/update .venv on their own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian's Mesa EGL/GL libraries for offscreen VTK rendering (installed only when no libEGL is present).
GL_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx-mesa0 libgles2 libosmesa6

.PHONY: demo test lint gl bench bench-gpu fuzz train-demo clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[scene,test]'
	@touch $(STAMP)

gl:
	@if ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then :; else \
	  echo "Installing Mesa EGL for offscreen rendering: $(GL_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $(GL_PACKAGES) >/dev/null; fi

demo: $(STAMP) gl
	$(BIN)/reactkd demo --out demo

lint: $(STAMP)
	$(BIN)/ruff check REACTKD REACTKDTraining Testing benchmarks experiments Resources

test: $(STAMP) gl lint
	$(BIN)/python -m pytest

bench: $(STAMP) gl
	$(BIN)/python benchmarks/run_all.py

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --gpu

fuzz: $(STAMP)
	$(BIN)/python -m pytest Testing -m fuzz --hypothesis-profile=long

# The shipped demonstration model, reproduced with the project's own commands (resumable: rerun after a stop).
DEMO_BUILD  := build/demo-model
DEMO_CONFIG := REACTKD/reactkd/configs/demo.yaml
DEMO_DEVICE ?= auto
DEMO_MODEL  := REACTKD/reactkd/data/models/reactkd-demo-student
train-demo: $(STAMP)
	test -f $(DEMO_BUILD)/cohort/manifest.csv || $(BIN)/reactkd synth --out $(DEMO_BUILD)/cohort --cases 48 --seed 7
	$(BIN)/reactkd train --stage teacher-sf --manifest $(DEMO_BUILD)/cohort/manifest.csv --out $(DEMO_BUILD)/teacher-sf \
	  --config $(DEMO_CONFIG) --epochs 6 --device $(DEMO_DEVICE) --resume
	$(BIN)/reactkd train --stage teacher-dose --manifest $(DEMO_BUILD)/cohort/manifest.csv --out $(DEMO_BUILD)/teacher-dose \
	  --config $(DEMO_CONFIG) --epochs 4 --device $(DEMO_DEVICE) --resume
	$(BIN)/reactkd train --stage student --manifest $(DEMO_BUILD)/cohort/manifest.csv --out $(DEMO_BUILD)/student \
	  --config $(DEMO_CONFIG) --epochs 5 --device $(DEMO_DEVICE) --resume \
	  --teacher-sf $(DEMO_BUILD)/teacher-sf --teacher-dose $(DEMO_BUILD)/teacher-dose
	$(BIN)/reactkd evaluate --manifest $(DEMO_BUILD)/cohort/manifest.csv --model $(DEMO_BUILD)/student \
	  --out $(DEMO_BUILD)/evaluation --fold 0 --folds 3 --device $(DEMO_DEVICE)
	rm -rf $(DEMO_MODEL) && mkdir -p $(DEMO_MODEL)
	cp $(DEMO_BUILD)/student/model.safetensors $(DEMO_BUILD)/student/metadata.json $(DEMO_MODEL)/

clean:
	rm -rf build demo .pytest_cache .ruff_cache
