"""One module per chapter, named like the chapter, holding what that chapter
writes out.

A chapter shows its models, losses and checks in its own cells; the same code
lives here (a test keeps the two copies identical) so that later chapters and
the book's trained models (``vaecourse.zoo``) can import it. Later chapters
import earlier ones, never the other way round.
"""
