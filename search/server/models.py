"""The API's documented shapes: request fields and response bodies (pydantic)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from search.filters import Filters


class SearchFields(BaseModel):
    """What a search takes besides its image: the CLI's `search` options, by the same names."""

    q: str = Field("", description="Text terms: `beach + sunset - people`, weights as `2:term`")
    k: int = Field(20, ge=1, le=1000, description="Number of results")
    offset: int = Field(0, ge=0, le=10000, description="Results to skip (for paging)")
    rerank: bool = Field(False, description="Rescore the top candidates with the ITM head")
    rerank_k: int = Field(32, ge=1, le=1000, description="Candidates the ITM head rescores")
    threshold: float | None = Field(None, description="Drop results scoring below")
    under: list[str] = Field([], description="Only under this folder (repeatable)")
    glob: str | None = Field(None, description="Only paths or names matching")
    after: str | None = Field(None, description="Taken on/after (YYYY, YYYY-MM, YYYY-MM-DD)")
    before: str | None = Field(None, description="Taken before")
    min_width: int | None = Field(None, ge=1, description="Minimum width in px")
    min_height: int | None = Field(None, ge=1, description="Minimum height in px")
    camera: str | None = Field(None, description="Camera make/model contains")
    text_match: bool = Field(
        False, description="Fuse a keyword ranking over captions and file/folder names (RRF)"
    )

    def filters(self) -> Filters:
        return Filters(
            under=tuple(self.under), glob=self.glob or None, after=self.after or None,
            before=self.before or None, min_width=self.min_width, min_height=self.min_height,
            camera=self.camera or None,
        )  # fmt: skip


class Result(BaseModel):
    """One image found: the CLI's `--json` fields, plus where to fetch its pictures."""

    rank: int
    id: int
    score: float
    path: str = Field(description="os.fsdecode of the file's path bytes")
    width: int | None
    height: int | None
    taken_at: str | None
    thumbnail: str = Field(description="URL of its thumbnail")
    file: str = Field(description="URL of the original file")
    itm_prob: float | None = Field(None, description="Calibrated match probability (reranked)")
    itc_score: float | None = Field(None, description="Cosine before reranking (reranked)")
    caption: str | None = Field(None, description="Its stored caption (`index --captions`)")
    text_rank: int | None = Field(None, description="Its rank by keywords (`text_match`)")
    vector_rank: int | None = Field(None, description="Its rank by vector (`text_match`)")


class Results(BaseModel):
    results: list[Result]
    took_ms: float


class Text(BaseModel):
    rank: int
    text: str
    score: float


class Texts(BaseModel):
    texts: list[Text]
    took_ms: float


class Status(BaseModel):
    """The index as `photoseek status --json` reports it, and the server's own state."""

    index: dict[str, object]
    generation: int = Field(description="How many times the server opened the index")
    reranker: str
    text_precision: str = Field(description="The text tower queries run in: fp32 or int8")
    token_required: bool
    max_upload_bytes: int


class Login(BaseModel):
    token: str


class Error(BaseModel):
    error: str = Field(description="What went wrong, in one line")
