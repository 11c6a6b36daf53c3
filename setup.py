from setuptools import find_packages, setup

setup(
    name="gptjax",
    version="0.1.0",
    description="GPT-style language models in JAX/Flax: pretraining to chat, sharded, measured.",
    packages=find_packages(include=["gptjax", "gptjax.*"]),
    python_requires=">=3.11",  # jax>=0.7 needs it; a TPU image's python3 is 3.10 (worker/setup.sh)
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.10.4,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11.5,<0.13",
        "grain>=0.2.10,<0.3",
        "tensorflow-datasets>=4.9.7,<5",
        "array-record>=0.7,<0.9",
        "importlib_resources>=6",  # tensorflow-datasets needs it for catalogue corpora
        "sentencepiece>=0.2,<0.3",
        "ml-collections>=1.0,<2",
        "sacrebleu>=2.4,<3",  # BLEU with its signature (gptjax/evals/bleu.py)
        "krippendorff>=0.6,<1",  # inter-rater agreement of human reviews
        "safetensors>=0.4,<1",
        "tokenizers>=0.19,<1",  # Hugging Face tokenizer.json: imported models keep theirs
        "jinja2>=3.1.6,<4",  # their chat templates, sandboxed (3.1.6 closes known escapes)
        "starlette>=0.37,<2",  # gptjax-serve: the ASGI app
        "uvicorn>=0.30,<1",  # gptjax-serve: the ASGI server
        "prometheus_client>=0.20,<1",  # gptjax-serve: /metrics
        "tensorboardX>=2.6,<3",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "numpy>=1.26",
    ],
    extras_require={
        # The tests compare with PyTorch references (benchmarks/), so they need torch too.
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "torch>=2.4,<3", "transformers>=4.42,<6",
                "openai>=1.40,<4",  # the server's tests drive it with the real client
                # A workdir and a corpus in gs://, tested against a local GCS emulator.
                "gcsfs>=2024.6", "gcp-storage-emulator>=2024.8"],
        "gpu": ["jax[cuda12]>=0.7,<0.11"],
        # A run in a bucket: gcsfs for metrics, TensorBoard, corpora (Orbax brings its own).
        "gcs": ["gcsfs>=2024.6"],
        "tpu": ["jax[tpu]>=0.7,<0.11", "gcsfs>=2024.6"],
        "hf": ["transformers>=4.42,<6", "torch>=2.4,<3"],
        # PyTorch reference for benchmarks/ only; gptjax itself never imports torch.
        "bench": ["torch>=2.4,<3", "transformers>=4.42,<6"],
    },
    entry_points={
        "console_scripts": [
            "gptjax-train=gptjax.train:main",
            "gptjax-eval=gptjax.evaluate:main",
            "gptjax-sample=gptjax.generate:main",
            "gptjax-prepare=gptjax.data.prepare:main",
            "gptjax-plan=gptjax.plan:main",
            "gptjax-lora=gptjax.lora_cli:main",
            "gptjax-convert=gptjax.interop.convert:main",
            "gptjax-serve=gptjax.serve.server:main",
            "gptjax-chat=gptjax.serve.chat_cli:main",
            "gptjax-feedback=gptjax.serve.feedback:main",
            "gptjax-review=gptjax.evals.review_import:main",
            "gptjax-launch=gptjax.launch:main",
        ]
    },
)
