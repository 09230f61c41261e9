# siq: two commands on a fresh machine: `make firmware` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SIQ := $(VENV)/bin/siq
STAMP := $(VENV)/.installed
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm dataset-fashion-mnist
OUT ?= out

.PHONY: setup firmware test bench sweep sweep-plus sweep-plus-validation sweep-plus-validation3 sweep-plus-per-channel sweep-plus-session6 sweep-plus-session7 sweep-plus-session9 sweep-plus-session10 sweep-plus-session11 sweep-plus-session12 sweep-plus-session13 clean \
	toolchain

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory toolchain
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on this disk; the project itself only asks for torch>=2.2
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages: the Cortex-M cross compiler, QEMU and Fashion-MNIST (as root, only what is missing).
toolchain:
	@missing=""; \
	command -v arm-none-eabi-gcc >/dev/null || missing="$$missing gcc-arm-none-eabi libnewlib-arm-none-eabi"; \
	command -v qemu-system-arm >/dev/null || missing="$$missing qemu-system-arm"; \
	test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run as root: apt-get install --no-install-recommends$$missing)"; exit 1; \
	  fi; \
	fi

firmware: setup
	$(SIQ) pipeline --out $(OUT) --force

test: setup
	$(PY) -m pytest -q host_tests

bench: setup
	$(PY) -m siq.codegen.bench --out $(OUT)/bench.json

# The committed experiments (docs/): the 1-4 x 1-4 grid, then weight bits 1-8 and float at 4-bit and float
# activations, for uniform, k-means and SIQ. Cells are cached in .siq_cache, so an interrupted sweep resumes.
SWEEP := $(SIQ) sweep --methods uniform,kmeans,siq --cache-dir .siq_cache --jobs 2
FASHION_SIQ := --siq-rounds 3 --siq-epochs 1   # 60,000 training images: 3 rounds of 1 epoch fit the 2-core budget
# The office-images stand-in: Fashion padded to 32x32 on paper-office (16x paper-mnist's MACs), on a stratified subset
OFFICE := --dataset fashion --arch paper-office --train-size 12000 --test-size 2000 --siq-rounds 3 --siq-epochs 2
sweep: setup
	$(SWEEP) --dataset mnist5k --weight-bits 1-4 --act-bits 1-4 --out docs/results/mnist5k-grid.jsonl
	$(SWEEP) --dataset mnist5k --weight-bits 1-8,float --act-bits 4,float --out docs/results/mnist5k-widths.jsonl
	$(SIQ) report docs/results/mnist5k-grid.jsonl docs/results/mnist5k-widths.jsonl --out docs/mnist5k --title "mnist5k, paper-mnist"
	$(SWEEP) --dataset fashion $(FASHION_SIQ) --weight-bits 1-4 --act-bits 1-4 --out docs/results/fashion-grid.jsonl
	$(SWEEP) --dataset fashion $(FASHION_SIQ) --weight-bits 1-8,float --act-bits 4,float --out docs/results/fashion-widths.jsonl
	$(SIQ) report docs/results/fashion-grid.jsonl docs/results/fashion-widths.jsonl --out docs/fashion --title "Fashion-MNIST, paper-mnist"
	$(SWEEP) $(OFFICE) --weight-bits 1-4 --act-bits 1-4 --out docs/results/fashion32-office-grid.jsonl
	$(SWEEP) $(OFFICE) --weight-bits 1-8,float --act-bits 4,float --out docs/results/fashion32-office-widths.jsonl
	$(SIQ) report docs/results/fashion32-office-grid.jsonl docs/results/fashion32-office-widths.jsonl --out docs/fashion32-office --title "Fashion-MNIST 32×32 (12,000 / 2,000 subset), paper-office"
	$(MAKE) --no-print-directory sweep-plus

# Beyond the paper (siq+): the ablation (each ingredient off, 2 seeds) and siq+ on the same grids as above.
PLUS := $(SIQ) sweep --cache-dir .siq_cache --jobs 2
ABLATION := siq,siq+,siq+-fc,siq+-centroids,siq+-distill,siq+-progressive,siq+-steps
# The Fashion float recipe chosen on a validation split (siq sweep --validation 0.1; 90.0 % held out)
FASHION_RECIPE := --epochs 30 --lr 3e-3 --augment-shift 1 --flip --dropout 0.2
sweep-plus: setup
	$(PLUS) --dataset mnist5k --methods $(ABLATION) --weight-bits 1,2 --act-bits 2,4 --seeds 0,1 --out docs/results/mnist5k-ablation.jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --methods siq+,siq+-progressive --weight-bits 1,2 --act-bits 2,4 --out docs/results/mnist5k-val-progressive.jsonl
	$(PLUS) --dataset mnist5k --methods siq+ --weight-bits 1-4 --act-bits 1-4 --out docs/results/mnist5k-plus-grid.jsonl
	$(PLUS) --dataset fashion $(FASHION_SIQ) --methods siq+ --weight-bits 1-4 --act-bits 1-4 --out docs/results/fashion-plus-grid.jsonl
	$(PLUS) --dataset fashion $(FASHION_SIQ) --methods siq+ --fc-bits 4 --weight-bits 2,4 --act-bits 4 --out docs/results/fashion-plus-fc4.jsonl
	$(PLUS) --dataset fashion $(FASHION_RECIPE) --methods siq+ --weight-bits 1,2,4 --act-bits 2,4 --seeds 0,1 --siq-rounds 4 --siq-epochs 1 --out docs/results/fashion-plus-recipe.jsonl
	$(MAKE) --no-print-directory sweep-plus-validation
	$(RECIPE2) --seeds 0,1 --weight-bits 2,4 --act-bits 2,4 --out docs/results/fashion-plus-recipe2-a.jsonl
	$(RECIPE2) --seeds 0 --weight-bits 1 --act-bits 4 --out docs/results/fashion-plus-recipe2-b.jsonl
	cat docs/results/fashion-plus-recipe2-a.jsonl docs/results/fashion-plus-recipe2-b.jsonl > docs/results/fashion-plus-recipe2.jsonl
	rm docs/results/fashion-plus-recipe2-a.jsonl docs/results/fashion-plus-recipe2-b.jsonl
	$(RECIPE3) --methods siq+ --weight-bits 2,4 --act-bits 2,4 --out docs/results/fashion-plus-recipe3-a.jsonl
	$(RECIPE3) --methods siq+-progressive --weight-bits 1 --act-bits 4 --out docs/results/fashion-plus-recipe3-b.jsonl
	$(RECIPE3) --methods siq+ --fc-bits 4 --weight-bits 4 --act-bits 4 --out docs/results/fashion-plus-recipe3-c.jsonl
	cat docs/results/fashion-plus-recipe3-[abc].jsonl > docs/results/fashion-plus-recipe3.jsonl
	rm docs/results/fashion-plus-recipe3-[abc].jsonl
	$(MAKE) --no-print-directory sweep-plus-per-channel
	$(SIQ) report docs/results/mnist5k-grid.jsonl docs/results/mnist5k-widths.jsonl docs/results/mnist5k-plus-grid.jsonl --out docs/mnist5k-plus --title "mnist5k: SIQ+ against the paper's methods"
	$(SIQ) report docs/results/mnist5k-ablation.jsonl --out docs/mnist5k-ablation --title "mnist5k: SIQ+ ablation (2 seeds)"
	$(SIQ) report docs/results/fashion-grid.jsonl docs/results/fashion-widths.jsonl docs/results/fashion-plus-grid.jsonl docs/results/fashion-plus-fc4.jsonl --out docs/fashion-plus --title "Fashion-MNIST: SIQ+"
	$(SIQ) report docs/results/fashion-plus-recipe.jsonl --out docs/fashion-plus-recipe --title "Fashion-MNIST: SIQ+ on the validation-chosen float recipe (2 seeds)"

# Choosing the Fashion recipe by QUANTIZED validation accuracy (siq+ 4 x 2; 54,000 training / 6,000 held-out images):
# dropout 0.5 (R5) against 0.2 (R2), int8 against 12-bit codebook values, retraining rate 3e-4 against 1e-3.
R5 := --epochs 30 --lr 3e-3 --augment-shift 1 --flip
VAL := $(PLUS) --dataset fashion --validation 0.1
VALPLUS := $(VAL) --methods siq+ --siq-rounds 4 --siq-epochs 2
VALOUT := docs/results/fashion-plus-validation
MVAL := docs/results/mnist5k-val-w2a2
# ... and what it chose, on the test split
RECIPE2 := $(PLUS) --dataset fashion $(R5) --methods siq+ --siq-rounds 4 --siq-epochs 2 --siq-lr 1e-3 --codebook-bits 12
# ... and what session 4's validation chose: 4 x 4 retraining, 1 weight bit without progressive lowering
RECIPE3 := $(PLUS) --dataset fashion $(R5) --siq-rounds 4 --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12 --seeds 0,1
sweep-plus-validation: setup
	$(VAL) $(R5) --methods kmeans --weight-bits 4,float --act-bits 2,4,float --out $(VALOUT)-1.jsonl
	$(VAL) $(R5) --dropout 0.2 --methods kmeans --weight-bits 4,float --act-bits 2,4,float --out $(VALOUT)-2.jsonl
	$(VAL) $(R5) --codebook-bits 12 --methods kmeans --weight-bits 2,4 --act-bits 2,4,float --out $(VALOUT)-3.jsonl
	$(VAL) $(R5) --dropout 0.2 --codebook-bits 12 --methods kmeans --weight-bits 2,4 --act-bits 2,4,float --out $(VALOUT)-4.jsonl
	$(VALPLUS) $(R5) --siq-lr 3e-4 --weight-bits 2 --act-bits 2 --out $(VALOUT)-5.jsonl
	$(VALPLUS) $(R5) --siq-lr 1e-3 --weight-bits 2 --act-bits 2 --out $(VALOUT)-6.jsonl
	$(VALPLUS) $(R5) --codebook-bits 12 --weight-bits 2 --act-bits 2 --out $(VALOUT)-7.jsonl
	$(VALPLUS) $(R5) --codebook-bits 12 --weight-bits 4 --act-bits 4 --out $(VALOUT)-8.jsonl
	$(VALPLUS) $(R5) --codebook-bits 12 --weight-bits 1 --act-bits 4 --out $(VALOUT)-9.jsonl
	$(VALPLUS) $(R5) --dropout 0.2 --codebook-bits 12 --weight-bits 2 --act-bits 2 --out $(VALOUT)-10.jsonl
	$(VALPLUS) $(R5) --dropout 0.2 --codebook-bits 12 --weight-bits 4 --act-bits 4 --out $(VALOUT)-11.jsonl
	$(VALPLUS) $(R5) --dropout 0.2 --codebook-bits 12 --weight-bits 1 --act-bits 4 --out $(VALOUT)-12.jsonl
	cat $(VALOUT)-[0-9]*.jsonl > $(VALOUT).jsonl && rm $(VALOUT)-[0-9]*.jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --methods siq+ --weight-bits 2 --act-bits 2 --seeds 0,1 --out $(MVAL)-a.jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --methods siq+ --weight-bits 2 --act-bits 2 --seeds 0,1 --siq-lr 1e-3 --codebook-bits 12 --out $(MVAL)-b.jsonl
	cat $(MVAL)-a.jsonl $(MVAL)-b.jsonl > $(MVAL).jsonl && rm $(MVAL)-a.jsonl $(MVAL)-b.jsonl
	$(MAKE) --no-print-directory sweep-plus-validation3

# Session 4 on the same validation splits: twice the retraining (4 x 4), progressive lowering off at 1 weight bit,
# sequential calibration, augmentation during retraining, and the A2 ceiling (8-bit weights retrained at A2).
VAL3 := $(VAL) $(R5) --siq-rounds 4 --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12
VAL3OUT := docs/results/fashion-plus-validation3
sweep-plus-validation3: setup
	$(VAL) $(R5) --methods kmeans --weight-bits float --act-bits 1-4 --out $(VAL3OUT)-1.jsonl
	$(VAL) $(R5) --calibration sequential --methods kmeans --weight-bits float --act-bits 1-4 --out $(VAL3OUT)-2.jsonl
	$(VAL3) --methods siq+ --weight-bits 2 --act-bits 2 --out $(VAL3OUT)-3.jsonl
	$(VAL3) --methods siq+,siq+-progressive --weight-bits 1 --act-bits 4 --out $(VAL3OUT)-4.jsonl
	$(VAL3) --calibration sequential --methods siq+,siq+-progressive,siq+-steps --weight-bits 2 --act-bits 2 --out $(VAL3OUT)-5.jsonl
	$(VAL3) --methods siq+ --weight-bits 8 --act-bits 2 --out $(VAL3OUT)-6.jsonl
	$(VAL3) --siq-augment-shift 1 --siq-flip --methods siq+ --weight-bits 2 --act-bits 2 --out $(VAL3OUT)-7.jsonl
	cat $(VAL3OUT)-[0-9]*.jsonl > $(VAL3OUT).jsonl && rm $(VAL3OUT)-[0-9]*.jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --siq-epochs 4 --methods siq+,siq+-progressive --weight-bits 2 --act-bits 2 --seeds 0,1 --out $(MVAL)-3a.jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --siq-epochs 4 --calibration sequential --methods siq+,siq+-progressive --weight-bits 2 --act-bits 2 --seeds 0,1 --out $(MVAL)-3b.jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --siq-epochs 8 --methods siq+ --weight-bits 2 --act-bits 2 --seeds 0,1 --out $(MVAL)-3c.jsonl
	cat $(MVAL)-3a.jsonl $(MVAL)-3b.jsonl $(MVAL)-3c.jsonl > $(MVAL)-session4.jsonl && rm $(MVAL)-3[abc].jsonl

# Session 5: one codebook per conv output channel (--per-channel conv) with session 4's recipe, held out, then on
# the test split (2 seeds); mnist5k W2A2 held out, then W1-2 x A2-4 on its test split against the ablation's siq+.
PCOUT := docs/results/fashion-plus-per-channel
sweep-plus-per-channel: setup
	$(VAL3) --methods siq+ --weight-bits 2 --act-bits 4 --out $(PCOUT)-0.jsonl
	$(VAL3) --per-channel conv --methods siq+ --weight-bits 2 --act-bits 2,4 --out $(PCOUT)-1.jsonl
	$(VAL3) --per-channel conv --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(PCOUT)-2.jsonl
	$(RECIPE3) --per-channel conv --methods siq+ --weight-bits 2 --act-bits 2,4 --out $(PCOUT)-3.jsonl
	$(RECIPE3) --per-channel conv --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(PCOUT)-4.jsonl
	$(RECIPE3) --per-channel conv --methods siq+ --weight-bits 4 --act-bits 2,4 --out $(PCOUT)-5.jsonl
	$(RECIPE3) --per-channel conv --methods siq+ --fc-bits 4 --weight-bits 4 --act-bits 4 --out $(PCOUT)-6.jsonl
	cat $(PCOUT)-[0-9].jsonl > $(PCOUT).jsonl && rm $(PCOUT)-[0-9].jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --per-channel conv --methods siq+ --weight-bits 2 --act-bits 2 \
		--seeds 0,1 --out $(MVAL)-per-channel.jsonl
	$(PLUS) --dataset mnist5k --per-channel conv --methods siq+ --weight-bits 1,2 --act-bits 2,4 --seeds 0,1 \
		--out docs/results/mnist5k-per-channel.jsonl

# Session 6. Fashion: float recipes held out (seed 0; float, float-weight A4 and post-training per-channel k-means
# as the quantization-robustness proxy): R5 against label smoothing 0.1, weight decay 0.05 and 40 epochs (R40,
# chosen); an 8-bit input image at A2 (--input-bits 8) held out; then R40 on the test split, 2 seeds.
# mnist5k: 60 float epochs (held out, 2 seeds), SIQ+ W2A2 retraining variants on a larger held-out split (1,000
# images, 4 seeds); on the test split the default retraining (4 x 2) and the chosen one (4 x 4 at 1e-3, 12-bit
# codebooks, per channel).
R40 := --epochs 40 --lr 3e-3 --augment-shift 1 --flip
S6VAL := $(VAL) --codebook-bits 12 --per-channel conv --methods kmeans --weight-bits float,4,2 --act-bits 4,float
S6OUT := docs/results/fashion-plus-session6
R40T := $(PLUS) --dataset fashion $(R40) --siq-rounds 4 --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12 --per-channel conv \
	--seeds 0,1
S6M := $(PLUS) --dataset mnist5k --validation 0.25 --seeds 0,1,2,3 --epochs 60 --methods siq+ --weight-bits 2 --act-bits 2
S6MOUT := docs/results/mnist5k-session6
sweep-plus-session6: setup
	$(S6VAL) $(R5) --out $(S6OUT)-val-1.jsonl
	$(S6VAL) $(R5) --label-smoothing 0.1 --out $(S6OUT)-val-2.jsonl
	$(S6VAL) $(R5) --weight-decay 0.05 --out $(S6OUT)-val-3.jsonl
	$(S6VAL) $(R40) --out $(S6OUT)-val-4.jsonl
	$(VAL3) --per-channel conv --input-bits 8 --methods siq+ --weight-bits 2 --act-bits 2 --out $(S6OUT)-val-5.jsonl
	cat $(S6OUT)-val-[0-9].jsonl > $(S6OUT)-validation.jsonl && rm $(S6OUT)-val-[0-9].jsonl
	$(R40T) --methods siq+ --weight-bits 4,float --act-bits 4 --out $(S6OUT)-1.jsonl
	$(R40T) --methods siq+ --weight-bits float --act-bits float --out $(S6OUT)-2.jsonl
	$(R40T) --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(S6OUT)-3.jsonl
	$(R40T) --methods siq+ --weight-bits 2 --act-bits 4 --out $(S6OUT)-4.jsonl
	$(R40T) --methods siq+ --fc-bits 4 --weight-bits 4 --act-bits 4 --out $(S6OUT)-5.jsonl
	$(R40T) --input-bits 8 --methods siq+ --weight-bits 2,4 --act-bits 2 --out $(S6OUT)-6.jsonl
	cat $(S6OUT)-[0-9].jsonl > $(S6OUT).jsonl && rm $(S6OUT)-[0-9].jsonl
	$(PLUS) --dataset mnist5k --validation 0.1 --seeds 0,1 --epochs 60 --per-channel conv --methods siq+ \
		--weight-bits 2,float --act-bits 2,float --out $(S6MOUT)-val-1.jsonl
	$(S6M) --out $(S6MOUT)-val-2.jsonl
	$(S6M) --per-channel conv --out $(S6MOUT)-val-3.jsonl
	$(S6M) --per-channel conv --siq-epochs 4 --out $(S6MOUT)-val-4.jsonl
	$(S6M) --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12 --out $(S6MOUT)-val-5.jsonl
	$(S6M) --per-channel conv --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12 --out $(S6MOUT)-val-6.jsonl
	cat $(S6MOUT)-val-[0-9].jsonl > $(S6MOUT)-validation.jsonl && rm $(S6MOUT)-val-[0-9].jsonl
	$(PLUS) --dataset mnist5k --seeds 0,1 --epochs 60 --per-channel conv --methods siq+ --weight-bits 1,2,float \
		--act-bits 2,4,float --out $(S6MOUT)-1.jsonl
	$(PLUS) --dataset mnist5k --seeds 0,1 --epochs 60 --per-channel conv --siq-epochs 4 --siq-lr 1e-3 \
		--codebook-bits 12 --methods siq+ --weight-bits 1,2 --act-bits 2,4 --out $(S6MOUT)-2.jsonl
	cat $(S6MOUT)-[0-9].jsonl > $(S6MOUT).jsonl && rm $(S6MOUT)-[0-9].jsonl

# Session 7. Fashion: the dropout-0.2 float recipe (R2, session 3's, 90.0 % held out) against R40 once more, now that
# per-channel conv codebooks with 12-bit values fix the weight grid that made R2 quantize badly; held out (seed 0)
# at W4A4, W2A4 and W1A4 (the recipe with the higher mean of the three is carried on), and SIQ retraining at the
# float recipe's dropout (--siq-dropout 0.2) against the architecture's 0.5 at the same three cells (the higher mean
# decides the retraining dropout) and at W2A2 / W4A2; where the 4-bit activation loss is (float weights, input and
# feature maps at 4 or 8 bits). Then R2 on the test split (2 seeds) with the chosen retraining dropout only.
# mnist5k: float dropout 0.2 and retraining dropout 0.2 held out (1,000 images, 4 seeds, session 6's W2A2 retraining).
R2 := $(R5) --dropout 0.2
S7 := --siq-rounds 4 --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12 --per-channel conv
S7OUT := docs/results/fashion-plus-session7
S7MOUT := docs/results/mnist5k-session7
S7M := $(PLUS) --dataset mnist5k --validation 0.25 --seeds 0,1,2,3 --epochs 60 --per-channel conv --siq-epochs 4 \
	--siq-lr 1e-3 --codebook-bits 12 --methods siq+
sweep-plus-session7: setup
	$(VAL) $(R2) $(S7) --methods siq+ --weight-bits 2,4 --act-bits 4 --out $(S7OUT)-val-1.jsonl
	$(VAL) $(R40) $(S7) --methods siq+ --weight-bits 2,4 --act-bits 4 --out $(S7OUT)-val-2.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --methods siq+ --weight-bits 2,4 --act-bits 4 --out $(S7OUT)-val-3.jsonl
	$(VAL) $(R2) $(S7) --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(S7OUT)-val-4.jsonl
	$(VAL) $(R40) $(S7) --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(S7OUT)-val-5.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(S7OUT)-val-6.jsonl
	$(VAL) $(R2) $(S7) --methods siq+ --weight-bits 2,4 --act-bits 2 --out $(S7OUT)-val-7.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --methods siq+ --weight-bits 2,4 --act-bits 2 --out $(S7OUT)-val-8.jsonl
	$(VAL) $(R40) --methods kmeans --weight-bits float --act-bits 4,8 --input-bits 4 --out $(S7OUT)-val-9.jsonl
	$(VAL) $(R40) --methods kmeans --weight-bits float --act-bits 4,8 --input-bits 8 --out $(S7OUT)-val-10.jsonl
	cat $(S7OUT)-val-[0-9]*.jsonl > $(S7OUT)-validation.jsonl && rm $(S7OUT)-val-[0-9]*.jsonl
	$(PLUS) --dataset fashion $(R2) $(S7) --seeds 0,1 --methods siq+ --weight-bits float --act-bits float \
		--out $(S7OUT)-1.jsonl
	$(PLUS) --dataset fashion $(R2) $(S7) --siq-dropout 0.2 --seeds 0,1 --methods siq+ --weight-bits 2,4 --act-bits 4 \
		--out $(S7OUT)-2.jsonl
	$(PLUS) --dataset fashion $(R2) $(S7) --siq-dropout 0.2 --seeds 0,1 --methods siq+-progressive --weight-bits 1 \
		--act-bits 4 --out $(S7OUT)-3.jsonl
	$(PLUS) --dataset fashion $(R2) $(S7) --siq-dropout 0.2 --seeds 0,1 --methods siq+ --fc-bits 4 --weight-bits 4 \
		--act-bits 4 --out $(S7OUT)-4.jsonl
	cat $(S7OUT)-[0-9].jsonl > $(S7OUT).jsonl && rm $(S7OUT)-[0-9].jsonl
	$(S7M) --dropout 0.2 --weight-bits 2,float --act-bits 2,float --out $(S7MOUT)-val-1.jsonl
	$(S7M) --dropout 0.2 --siq-dropout 0.2 --weight-bits 2 --act-bits 2 --out $(S7MOUT)-val-2.jsonl
	$(S7M) --siq-dropout 0.2 --weight-bits 2 --act-bits 2 --out $(S7MOUT)-val-3.jsonl
	cat $(S7MOUT)-val-[0-9].jsonl > $(S7MOUT)-validation.jsonl && rm $(S7MOUT)-val-[0-9].jsonl

# Session 9. Fashion, held out (seed 0, session 7's chosen R2 + retraining dropout 0.2): a stronger distillation
# term (--distill 0.9 against the default 0.5) at W4A4 / W2A4 and W2A2 / W4A2, a softer one (temperature 2 against 4)
# at W2A2 / W4A2. On the test split: the chosen configuration with seeds 2 and 3 beside session 7's 0 and 1 (every
# cell of session 7, so the means are over 4 seeds), and the A2 cells with all 4 seeds, at temperature 4 and 2.
# mnist5k: the chosen retraining with dropout 0.2 on the test split, 4 seeds.
S9OUT := docs/results/fashion-plus-session9
S9 := $(PLUS) --dataset fashion $(R2) $(S7) --siq-dropout 0.2
sweep-plus-session9: setup
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --distill 0.9 --methods siq+ --weight-bits 2,4 --act-bits 4 \
		--out $(S9OUT)-val-1.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --distill 0.9 --methods siq+ --weight-bits 2,4 --act-bits 2 \
		--out $(S9OUT)-val-2.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --distill-temperature 2 --methods siq+ --weight-bits 2,4 --act-bits 2 \
		--out $(S9OUT)-val-3.jsonl
	cat $(S9OUT)-val-[0-9].jsonl > $(S9OUT)-validation.jsonl && rm $(S9OUT)-val-[0-9].jsonl
	$(S9) --seeds 2,3 --methods siq+ --weight-bits float --act-bits float --out $(S9OUT)-1.jsonl
	$(S9) --seeds 2,3 --methods siq+ --weight-bits 2,4 --act-bits 4 --out $(S9OUT)-2.jsonl
	$(S9) --seeds 2,3 --methods siq+-progressive --weight-bits 1 --act-bits 4 --out $(S9OUT)-3.jsonl
	$(S9) --seeds 2,3 --methods siq+ --fc-bits 4 --weight-bits 4 --act-bits 4 --out $(S9OUT)-4.jsonl
	$(S9) --seeds 0,1,2,3 --methods siq+ --weight-bits 2,4 --act-bits 2 --out $(S9OUT)-5.jsonl
	$(S9) --seeds 0,1,2,3 --distill-temperature 2 --methods siq+ --weight-bits 2,4 --act-bits 2 --out $(S9OUT)-6.jsonl
	cat $(S9OUT)-[0-9].jsonl > $(S9OUT).jsonl && rm $(S9OUT)-[0-9].jsonl
	$(PLUS) --dataset mnist5k --seeds 0,1,2,3 --epochs 60 --per-channel conv --siq-epochs 4 --siq-lr 1e-3 \
		--codebook-bits 12 --siq-dropout 0.2 --methods siq+ --weight-bits 2,float --act-bits 2,float \
		--out docs/results/mnist5k-session9.jsonl


# Session 10. Real activation steps (--real-steps: the feature-map steps trained as real numbers, then folded into
# the layers around each point, so the firmware stays shift-only). Fashion held out (seed 0): distillation
# temperature 1 at A2; real steps at A2 (T 2, session 9's choice there) and at A4; 6 rounds at W2A2 (4 x 4 has
# only its last round at 2 weight bits). mnist5k held out (8 seeds,
# 1,250 images): the distillation temperature (4, 2, 1, 0.5), weight 0.9, longer retraining and real steps.
# Test split: the choices, with every seed run reported.
S10OUT := docs/results/fashion-plus-session10
S10MOUT := docs/results/mnist5k-session10
S10 := $(S9) --real-steps
S10M := $(PLUS) --dataset mnist5k --epochs 60 --per-channel conv --siq-epochs 4 --siq-lr 1e-3 --codebook-bits 12 \
	--siq-dropout 0.2 --methods siq+
S10MV := $(S10M) --validation 0.25 --seeds 0,1,2,3,4,5,6,7
S10MV2 := $(S10MV) --weight-bits 2 --act-bits 2
sweep-plus-session10: setup
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --distill-temperature 1 --methods siq+ --weight-bits 2,4 --act-bits 2 \
		--out $(S10OUT)-val-1.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --real-steps --distill-temperature 2 --methods siq+ --weight-bits 2,4 \
		--act-bits 2 --out $(S10OUT)-val-2.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --real-steps --methods siq+ --weight-bits 2,4 --act-bits 4 \
		--out $(S10OUT)-val-3.jsonl
	$(VAL) $(R2) $(S7) --siq-dropout 0.2 --real-steps --distill-temperature 2 --siq-rounds 6 --methods siq+ \
		--weight-bits 2 --act-bits 2 --out $(S10OUT)-val-4.jsonl
	cat $(S10OUT)-val-[0-9].jsonl > $(S10OUT)-validation.jsonl && rm $(S10OUT)-val-[0-9].jsonl
	$(S10) --seeds 0,1,2,3 --distill-temperature 2 --methods siq+ --weight-bits 2,4 --act-bits 2 --out $(S10OUT)-1.jsonl
	$(S10) --seeds 0,1,2,3 --methods siq+ --weight-bits 2,4 --act-bits 4 --out $(S10OUT)-2.jsonl
	$(S10) --seeds 0,1,2,3 --distill-temperature 2 --siq-rounds 6 --methods siq+ --weight-bits 2 --act-bits 2 \
		--out $(S10OUT)-3.jsonl
	cat $(S10OUT)-[0-9].jsonl > $(S10OUT).jsonl && rm $(S10OUT)-[0-9].jsonl
	$(S10MV) --weight-bits 2,float --act-bits 2,float --out $(S10MOUT)-val-1.jsonl
	$(S10MV2) --distill-temperature 2 --out $(S10MOUT)-val-2.jsonl
	$(S10MV2) --distill-temperature 1 --out $(S10MOUT)-val-3.jsonl
	$(S10MV2) --distill-temperature 0.5 --out $(S10MOUT)-val-4.jsonl
	$(S10MV2) --distill-temperature 1 --distill 0.9 --out $(S10MOUT)-val-5.jsonl
	$(S10MV2) --distill-temperature 1 --siq-rounds 6 --out $(S10MOUT)-val-6.jsonl
	$(S10MV2) --distill-temperature 1 --siq-epochs 6 --out $(S10MOUT)-val-7.jsonl
	$(S10MV2) --distill-temperature 1 --real-steps --out $(S10MOUT)-val-8.jsonl
	cat $(S10MOUT)-val-[0-9].jsonl > $(S10MOUT)-validation.jsonl && rm $(S10MOUT)-val-[0-9].jsonl
	$(S10M) --seeds 0,1,2,3 --distill-temperature 1 --real-steps --weight-bits 2,float --act-bits 2,float \
		--out $(S10MOUT).jsonl

# Session 11. Fashion W2A2 held out (seed 0) against session 10's 6-round choice (86.50 %): retraining without
# dropout, 8 rounds, progressive activation bits (--progressive-acts 2: A4, A3, then A2) and temperature 1; the
# choice itself on a second held-out seed.
# mnist5k held out (8 seeds) against session 10's choice (T 1, real steps): 6 rounds, retraining without dropout,
# progressive activation bits, and two float recipes (+-1 px shifts instead of +-2, 100 epochs instead of 60).
# Test split, 8 seeds: session 10's mnist5k choice (seeds 4-7 beside 0-3), and the 100-epoch float recipe (the
# better float held out) with the same retraining.
S11OUT := docs/results/fashion-plus-session11
S11MOUT := docs/results/mnist5k-session11
S11V := $(VAL) $(R2) $(S7) --siq-dropout 0.2 --real-steps --distill-temperature 2 --siq-rounds 6 --methods siq+ \
	--weight-bits 2 --act-bits 2
S11MV := $(S10MV) --distill-temperature 1 --real-steps
sweep-plus-session11: setup
	$(S11V) --siq-dropout 0 --out $(S11OUT)-val-1.jsonl
	$(S11V) --siq-rounds 8 --out $(S11OUT)-val-2.jsonl
	$(S11V) --progressive-acts 2 --out $(S11OUT)-val-3.jsonl
	$(S11V) --distill-temperature 1 --out $(S11OUT)-val-4.jsonl
	$(S11V) --seeds 1 --out $(S11OUT)-val-5.jsonl
	cat $(S11OUT)-val-[0-9].jsonl > $(S11OUT)-validation.jsonl && rm $(S11OUT)-val-[0-9].jsonl
	$(S11MV) --weight-bits 2,float --act-bits 2,float --out $(S11MOUT)-val-1.jsonl
	$(S11MV) --weight-bits 2 --act-bits 2 --siq-rounds 6 --out $(S11MOUT)-val-2.jsonl
	$(S11MV) --weight-bits 2 --act-bits 2 --siq-dropout 0 --out $(S11MOUT)-val-3.jsonl
	$(S11MV) --weight-bits 2 --act-bits 2 --progressive-acts 2 --out $(S11MOUT)-val-4.jsonl
	$(S11MV) --augment-shift 1 --weight-bits 2,float --act-bits 2,float --out $(S11MOUT)-val-5.jsonl
	$(S11MV) --epochs 100 --weight-bits 2,float --act-bits 2,float --out $(S11MOUT)-val-6.jsonl
	cat $(S11MOUT)-val-[0-9].jsonl > $(S11MOUT)-validation.jsonl && rm $(S11MOUT)-val-[0-9].jsonl
	$(S10M) --seeds 0,1,2,3,4,5,6,7 --distill-temperature 1 --real-steps --weight-bits 2,float --act-bits 2,float \
		--out $(S11MOUT)-1.jsonl
	$(S10M) --seeds 0,1,2,3,4,5,6,7 --epochs 100 --distill-temperature 1 --real-steps --weight-bits 2,float \
		--act-bits 2,float --out $(S11MOUT)-2.jsonl
	cat $(S11MOUT)-[0-9].jsonl > $(S11MOUT).jsonl && rm $(S11MOUT)-[0-9].jsonl

# Session 12. Fashion W2A2 held out (seeds 0 and 1) against session 10/11's choice (6 rounds, T 2, real steps):
# SIQ's continuation penalty alpha_r ||w - Q(w)||^2 / ||w||^2 grows x4 a round by default (0.1 ... 102 at round 6);
# held constant at 0.03, 0.1 or 0.3 (--siq-growth 1 [--siq-alpha A]) and switched off (--siq-alpha 0); and a retraining
# rate of 2e-3 (seed 0); the constant penalty with 8 rounds; and at W2A4 (4 rounds, seed 0).
# Test split, 4 seeds: the penalty held constant at 0.1 and at 0.03. mnist5k held out (8 seeds): an 80-epoch float recipe, and the
# constant penalty on the 60- and 100-epoch float models.
S12OUT := docs/results/fashion-plus-session12
S12MOUT := docs/results/mnist5k-session12
S12T := $(S10) --seeds 0,1,2,3 --distill-temperature 2 --siq-rounds 6 --methods siq+ --weight-bits 2 --act-bits 2

sweep-plus-session12: setup
	$(S11V) --siq-lr 2e-3 --out $(S12OUT)-val-1.jsonl
	$(S11V) --seeds 0,1 --siq-growth 1 --out $(S12OUT)-val-2.jsonl
	$(S11V) --seeds 0,1 --siq-alpha 0 --out $(S12OUT)-val-3.jsonl
	$(S11V) --seeds 0,1 --siq-growth 1 --siq-alpha 0.3 --out $(S12OUT)-val-4.jsonl
	$(S10) --validation 0.1 --seeds 0 --methods siq+ --weight-bits 2 --act-bits 4 --siq-growth 1 \
		--out $(S12OUT)-val-5.jsonl
	$(S11V) --seeds 0,1 --siq-rounds 8 --siq-growth 1 --out $(S12OUT)-val-6.jsonl
	$(S11V) --seeds 0,1 --siq-growth 1 --siq-alpha 0.03 --out $(S12OUT)-val-7.jsonl
	cat $(S12OUT)-val-[0-9].jsonl > $(S12OUT)-validation.jsonl && rm $(S12OUT)-val-[0-9].jsonl
	$(S12T) --siq-growth 1 --out $(S12OUT)-1.jsonl
	$(S12T) --siq-growth 1 --siq-alpha 0.03 --out $(S12OUT)-2.jsonl
	cat $(S12OUT)-[0-9].jsonl > $(S12OUT).jsonl && rm $(S12OUT)-[0-9].jsonl
	$(S11MV) --epochs 80 --weight-bits 2,float --act-bits 2,float --out $(S12MOUT)-val-1.jsonl
	$(S11MV) --weight-bits 2 --act-bits 2 --siq-growth 1 --out $(S12MOUT)-val-2.jsonl
	$(S11MV) --epochs 100 --weight-bits 2 --act-bits 2 --siq-growth 1 --out $(S12MOUT)-val-3.jsonl
	cat $(S12MOUT)-val-[0-9].jsonl > $(S12MOUT)-validation.jsonl && rm $(S12MOUT)-val-[0-9].jsonl

# Session 13. Fashion W2A2 held out on four seeds (0-3) instead of two: the penalty held at 0.01, and seeds 2 and 3
# for 0.03 and 0.1 (seeds 0 and 1 are in session 12's file); 6 retraining epochs a round instead of 4 at 0.03.
# Test split: the choice (0.03) on seeds 4-7 beside session 12's seeds 0-3, decided before seeds 4-7 were run
# because the 4-seed mean (86.47 %) was inside one standard error of the target.
# mnist5k held out (8 seeds): a 70-epoch float recipe, between the 60-epoch one (gap 0.15 pp) and the 80 and 100 ones.
# And on the 100-epoch models (gap 0.54 pp), retraining 6 or 8 epochs a round, at rate 5e-4, or distilled at T 2.
# Float recipes at 60 epochs: dropout 0.3 instead of 0.5, and label smoothing 0.1, 0.05, 0.03 (float training only).
S13OUT := docs/results/fashion-plus-session13
S13MOUT := docs/results/mnist5k-session13
sweep-plus-session13: setup
	$(S11V) --seeds 0,1,2,3 --siq-growth 1 --siq-alpha 0.01 --out $(S13OUT)-val-1.jsonl
	$(S11V) --seeds 2,3 --siq-growth 1 --siq-alpha 0.03 --out $(S13OUT)-val-2.jsonl
	$(S11V) --seeds 2,3 --siq-growth 1 --out $(S13OUT)-val-3.jsonl
	$(S11V) --seeds 0,1 --siq-growth 1 --siq-alpha 0.03 --siq-epochs 6 --out $(S13OUT)-val-4.jsonl
	cat $(S13OUT)-val-[0-9].jsonl > $(S13OUT)-validation.jsonl && rm $(S13OUT)-val-[0-9].jsonl
	$(S12T) --seeds 4,5,6,7 --siq-growth 1 --siq-alpha 0.03 --out $(S13OUT).jsonl
	$(S11MV) --epochs 70 --weight-bits 2,float --act-bits 2,float --out $(S13MOUT)-val-1.jsonl
	$(S11MV) --epochs 100 --weight-bits 2 --act-bits 2 --siq-epochs 6 --out $(S13MOUT)-val-2.jsonl
	$(S11MV) --epochs 100 --weight-bits 2 --act-bits 2 --siq-epochs 8 --out $(S13MOUT)-val-3.jsonl
	$(S11MV) --epochs 100 --weight-bits 2 --act-bits 2 --siq-lr 5e-4 --out $(S13MOUT)-val-4.jsonl
	$(S11MV) --epochs 100 --weight-bits 2 --act-bits 2 --distill-temperature 2 --out $(S13MOUT)-val-5.jsonl
	$(S11MV) --dropout 0.3 --weight-bits 2,float --act-bits 2,float --out $(S13MOUT)-val-6.jsonl
	$(S11MV) --label-smoothing 0.1 --weight-bits 2,float --act-bits 2,float --out $(S13MOUT)-val-7.jsonl
	$(S11MV) --label-smoothing 0.05 --weight-bits 2,float --act-bits 2,float --out $(S13MOUT)-val-8.jsonl
	$(S11MV) --label-smoothing 0.03 --weight-bits 2,float --act-bits 2,float --out $(S13MOUT)-val-9.jsonl
	cat $(S13MOUT)-val-[0-9].jsonl > $(S13MOUT)-validation.jsonl && rm $(S13MOUT)-val-[0-9].jsonl

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .siq_cache
