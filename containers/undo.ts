type Step = () => Promise<unknown> | unknown;

/**
 * Incus-style reverter: register the undo of each finished step; unless done() is called, disposal
 * runs them in reverse order. Undo failures are collected, never allowed to mask the original error.
 */
export class Undo implements AsyncDisposable {
  readonly #steps: { label: string; step: Step }[] = [];
  #done = false;
  readonly failures: { label: string; error: unknown }[] = [];

  constructor(private readonly onFailure?: (label: string, error: unknown) => void) {}

  push(label: string, step: Step): void {
    this.#steps.push({ label, step });
  }

  done(): void {
    this.#done = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#done) return;
    while (this.#steps.length) {
      const { label, step } = this.#steps.pop()!;
      try {
        await step();
      } catch (error) {
        this.failures.push({ label, error });
        this.onFailure?.(label, error);
      }
    }
  }
}
